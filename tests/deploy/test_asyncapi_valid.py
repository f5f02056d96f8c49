"""The AsyncAPI contract validates with the official AsyncAPI parser (npm ``@asyncapi/parser``
with ``@asyncapi/avro-schema-parser``, installed by scripts/install-tools.sh), both the committed
``asyncapi.yaml`` and what ``order-bridge asyncapi`` generates now; and the parser really checks
the Avro and JSON Schema payloads (a broken one is refused). Fails, never skips, when node or the
parser is missing.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helmtools import ROOT, tools_bin_dir

from bridge.asyncapi import AVRO_SCHEMA_FORMAT, JSON_SCHEMA_FORMAT, build_document, dump_document
from bridge.cli import main

VALIDATOR = Path(__file__).with_name("asyncapi_validate.cjs")
INSTALL_HINT = "run scripts/install-tools.sh (installs @asyncapi/parser with npm)"


def _node_modules() -> Path:
    return tools_bin_dir().parent / "asyncapi" / "node_modules"


def validate(*files: Path) -> list[dict[str, Any]]:
    """One report per file from the official parser (see asyncapi_validate.cjs)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node not found on PATH: install Node.js >= 18; {INSTALL_HINT}", pytrace=False)
    modules = _node_modules()
    for package in ("parser", "avro-schema-parser"):
        if not (modules / "@asyncapi" / package / "package.json").is_file():
            pytest.fail(
                f"@asyncapi/{package} not found in {modules}: {INSTALL_HINT}", pytrace=False
            )
    proc = subprocess.run(
        [node, str(VALIDATOR), *map(str, files)],
        env={**os.environ, "NODE_PATH": str(modules)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if proc.returncode not in (0, 1):
        pytest.fail(f"the AsyncAPI parser crashed (exit {proc.returncode}):\n{proc.stderr}")
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(reports) == len(files), proc.stdout + proc.stderr
    return reports


def test_committed_and_generated_documents_are_valid_asyncapi(tmp_path: Path) -> None:
    generated_yaml = tmp_path / "generated.yaml"
    generated_json = tmp_path / "generated.json"
    assert main(["asyncapi", "--output", str(generated_yaml)]) == 0
    assert main(["asyncapi", "--format", "json", "--output", str(generated_json)]) == 0
    doc = build_document()
    addresses = sorted(c["address"] for c in doc["channels"].values())
    messages = sorted(doc["components"]["messages"])
    for report in validate(ROOT / "asyncapi.yaml", generated_yaml, generated_json):
        assert report["valid"], f"{report['file']}: " + "\n".join(report["errors"])
        assert report["errors"] == []
        # What the parser read is the whole contract: every topic, message and operation.
        assert report["channels"] == addresses
        assert report["messages"] == messages
        assert report["operations"] == sorted(doc["operations"])
        assert {AVRO_SCHEMA_FORMAT, JSON_SCHEMA_FORMAT} <= set(report["schemaFormats"])
        # Every Avro schema went through the Avro schema parser's validate() too.
        assert report["avroSchemasChecked"] == [
            f"/components/schemas/{name}/schema"
            for name in sorted(doc["components"]["schemas"])
            if doc["components"]["schemas"][name].get("schemaFormat") == AVRO_SCHEMA_FORMAT
        ]


def test_the_parser_checks_the_avro_and_json_schema_payloads(tmp_path: Path) -> None:
    """Negative controls: the validation above is not vacuous."""
    doc = build_document()
    broken_avro = copy.deepcopy(doc)
    # Structurally fine, wrong as Avro: only the Avro schema parser's validate() sees it.
    fields = broken_avro["components"]["schemas"]["OrderDeleted"]["schema"]["fields"]
    fields[0]["default"] = 5  # a string field's default
    broken_json = copy.deepcopy(doc)
    broken_json["components"]["schemas"]["OrderCommandJson"]["schema"]["oneOf"] = "not a list"
    broken_channel = copy.deepcopy(doc)
    broken_channel["operations"]["receiveCommands"]["action"] = "consume"
    files = []
    for name, variant in (
        ("avro", broken_avro),
        ("json", broken_json),
        ("channel", broken_channel),
    ):
        path = tmp_path / f"broken-{name}.yaml"
        path.write_text(dump_document(variant), encoding="utf-8")
        files.append(path)
    reports = validate(*files)
    for report in reports:
        assert not report["valid"], report["file"]
        assert report["errors"], report["file"]
    assert any("avro-schema: incompatible field default" in e for e in reports[0]["errors"])
