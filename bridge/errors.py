"""The bridge's exception tree.

::

    BridgeError(Exception)                        retriable=False  command_fault=False
    ├── ConfigError                               bad or missing configuration (startup)
    ├── InvalidCommandError(reason, message)      command_fault=True  → dead letter
    │   ├── InvalidOrderIdError(message)          reason="bad_order_id"
    │   ├── UnmappableOrderError(message)         reason="unmappable_order" (API data)
    │   └── RecordHandlingError(cause)            reason="internal_error" (last resort)
    ├── AvroError
    │   ├── SchemaLoadError                       a schema file is missing or invalid
    │   └── AvroDecodeError                       bytes do not decode with the schema
    └── NorceApiError(message, *, status, code, api_message, attempts, endpoint, retry_after)
        ├── NorceNotFoundError        404/410          command_fault=True
        ├── NorceInvalidRequestError  400/409/422      command_fault=True
        ├── NorceUnauthorizedError    401/403          systemic (bad key): hold, do not dead-letter
        ├── NorceRateLimitedError     429              retriable (honours Retry-After)
        ├── NorceUnavailableError     5xx              retriable
        ├── NorceTimeoutError         client timeouts  retriable
        └── NorceConnectionError      connect errors, resets, stale keep-alive  retriable

Two class attributes carry the policy, so callers decide with one predicate each:

* ``retriable``: the Norce client retries the error within one call (with backoff).
* ``command_fault``: the command itself is bad, so retrying later cannot help → dead letter.
  When it is ``False`` the problem is systemic (Norce down, bad credentials, a bug) and the
  service holds and retries instead of dead-lettering.

Messages never contain secrets (API key, ``Authorization`` header): the code that raises these
errors builds messages only from the endpoint label, the HTTP status and the API's error body.
"""

from __future__ import annotations

from typing import ClassVar

from bridge.vocabulary import DeadLetterReason  # re-exported: the vocabulary moved

__all__ = [
    "AvroDecodeError",
    "AvroError",
    "BridgeError",
    "ConfigError",
    "DeadLetterReason",
    "InvalidCommandError",
    "InvalidOrderIdError",
    "NorceApiError",
    "NorceConnectionError",
    "NorceInvalidRequestError",
    "NorceNotFoundError",
    "NorceRateLimitedError",
    "NorceTimeoutError",
    "NorceUnauthorizedError",
    "NorceUnavailableError",
    "RecordHandlingError",
    "SchemaLoadError",
    "UnmappableOrderError",
]


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    retriable: ClassVar[bool] = False
    command_fault: ClassVar[bool] = False


class ConfigError(BridgeError):
    """The configuration is missing or invalid; raised at startup."""


class InvalidCommandError(BridgeError):
    """The inbound command cannot be executed as given (dead letter)."""

    command_fault: ClassVar[bool] = True

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidOrderIdError(InvalidCommandError):
    """The order id is empty, too long or contains characters that are not allowed."""

    def __init__(self, message: str) -> None:
        super().__init__(DeadLetterReason.BAD_ORDER_ID, message)


class UnmappableOrderError(InvalidCommandError):
    """Norce returned an order that cannot be mapped to a snapshot: deterministic, no retry."""

    def __init__(self, message: str) -> None:
        super().__init__(DeadLetterReason.UNMAPPABLE_ORDER, message)


class RecordHandlingError(InvalidCommandError):
    """Handling one record failed unexpectedly (a bug, not bad input): the last-resort path
    dead-letters it with reason ``internal_error``; ``cause`` is the original exception."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(DeadLetterReason.INTERNAL_ERROR, f"internal error: {type(cause).__name__}")
        self.cause = cause


class AvroError(BridgeError):
    """Base of Avro schema and serialisation errors."""


class SchemaLoadError(AvroError):
    """An Avro schema file could not be read or parsed."""


class AvroDecodeError(AvroError):
    """Bytes could not be decoded with the expected Avro schema."""


class NorceApiError(BridgeError):
    """A call to the Norce Order API failed.

    ``status`` is ``None`` when no HTTP response arrived (timeouts, connection errors).
    ``code``/``api_message`` come from the API's error body when it had one.
    ``attempts`` counts the HTTP attempts made by the call, including the failing one.
    ``endpoint`` is a fixed label such as ``get_order`` (never an order id).
    ``retry_after`` is the server's ``Retry-After`` hint in seconds, when given.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        api_message: str | None = None,
        attempts: int = 1,
        endpoint: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.api_message = api_message
        self.attempts = attempts
        self.endpoint = endpoint
        self.retry_after = retry_after


class NorceNotFoundError(NorceApiError):
    """The order does not exist for this merchant and channel (404)."""

    command_fault: ClassVar[bool] = True


class NorceInvalidRequestError(NorceApiError):
    """Norce rejected the request as invalid, e.g. an illegal state transition (400/409/422)."""

    command_fault: ClassVar[bool] = True


class NorceUnauthorizedError(NorceApiError):
    """The API key was rejected (401/403); systemic, so neither retried nor dead-lettered."""


class NorceRateLimitedError(NorceApiError):
    """Norce asked us to slow down (429)."""

    retriable: ClassVar[bool] = True


class NorceUnavailableError(NorceApiError):
    """Norce answered with a server error (5xx)."""

    retriable: ClassVar[bool] = True


class NorceTimeoutError(NorceApiError):
    """The request timed out (connect, read, write or connection-pool timeout)."""

    retriable: ClassVar[bool] = True


class NorceConnectionError(NorceApiError):
    """The connection failed or broke (refused, reset, stale keep-alive, protocol error)."""

    retriable: ClassVar[bool] = True
