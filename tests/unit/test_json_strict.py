"""The one strict JSON parser for record bytes (issue 10)."""

from __future__ import annotations

import pytest

from bridge.jsonstrict import MAX_DEPTH, JsonInputError, loads_strict


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "invalid_json"),
        (b'{"a":' * 200 + b"1" + b"}" * 200, "invalid_json"),
        (b'"\\ud800"', "invalid_json"),
        (b'{"commandId": "\\udfff"}', "invalid_json"),
        (b'"\xed\xa0\x80"', "invalid_utf8"),
        (b'{"a": "\xff"}', "invalid_utf8"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
        (b"\xff\xfe{\x00}\x00", "invalid_utf8"),
        (b"[NaN]", "invalid_json"),
        (b"[Infinity]", "invalid_json"),
        (b"[1e400]", "invalid_json"),
        (b'{"state": "a", "state": "b"}', "invalid_json"),
        (b'{"x": {"k": 1, "k": 1}}', "invalid_json"),
        (b"", "invalid_json"),
        (b"{} {}", "invalid_json"),
    ],
)
def test_hostile_json_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    """Deep nesting, surrogates, bad UTF-8, BOM, non-finite numbers and duplicate keys fail."""
    with pytest.raises(JsonInputError) as info:
        loads_strict(data)
    assert info.value.reason == reason


def test_nesting_up_to_the_limit_and_plain_values_parse() -> None:
    """Nesting at the limit, escaped pairs and ordinary values are accepted."""
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert loads_strict(deep) is not None
    assert loads_strict(b'"\\ud83d\\ude00"') == "\U0001f600"
    assert loads_strict(b'{"a": [1, 2.5, true, null]}') == {"a": [1, 2.5, True, None]}
