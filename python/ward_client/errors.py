"""Errors raised by the Ward client.

Every failure the server reports arrives as a gRPC status; the client raises the
`WardError` subclass of that status code, keeping the server's message unchanged (it names
the unknown hash, the bad entity row, ...). Calls over Arrow Flight (`Client.dataset`) are
mapped the same way.

| gRPC status          | exception            |
| -------------------- | -------------------- |
| NOT_FOUND            | `NotFound`           |
| INVALID_ARGUMENT     | `InvalidArgument`    |
| FAILED_PRECONDITION  | `FailedPrecondition` |
| PERMISSION_DENIED    | `PermissionDenied`   |
| UNAUTHENTICATED      | `Unauthenticated`    |
| UNAVAILABLE          | `Unavailable`        |
| DEADLINE_EXCEEDED    | `DeadlineExceeded`   |
| DATA_LOSS            | `DataLoss`           |
| UNIMPLEMENTED        | `Unimplemented`      |
| anything else        | `WardError`          |

`WardError.code` is the status code's name (`"NOT_FOUND"`, ...) or None for errors found
by the client itself before anything was sent (for example an entity table without a
`patient_id` column, raised as `InvalidArgument`).
"""

import re

import grpc

__all__ = [
    "WardError",
    "NotFound",
    "InvalidArgument",
    "FailedPrecondition",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "DeadlineExceeded",
    "DataLoss",
    "Unimplemented",
    "from_rpc_error",
    "from_flight_error",
]


class WardError(Exception):
    """A failure reported by the Ward server (or found by the client before sending)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        #: The server's message, unchanged.
        self.message = message
        #: The gRPC status code's name, e.g. "NOT_FOUND"; None for client-side checks.
        self.code = code

    def __str__(self):
        return f"{self.code}: {self.message}" if self.code else self.message


class NotFound(WardError):
    """An unknown hash, reference, feature set or patient source."""


class InvalidArgument(WardError):
    """A malformed request: a bad reference, entity row, format or mapping."""


class FailedPrecondition(WardError):
    """The request is well-formed but not allowed in this state (e.g. a label set online)."""


class PermissionDenied(WardError):
    """The caller is known but may not do this."""


class Unauthenticated(WardError):
    """No credentials, or credentials the server does not accept."""


class Unavailable(WardError):
    """The server cannot be reached or its storage is unavailable."""


class DeadlineExceeded(WardError):
    """The call took longer than its deadline."""


class DataLoss(WardError):
    """Stored data is corrupt (a version no longer matches its hash)."""


class Unimplemented(WardError):
    """The server does not implement this call."""


_BY_CODE = {
    "NOT_FOUND": NotFound,
    "INVALID_ARGUMENT": InvalidArgument,
    "FAILED_PRECONDITION": FailedPrecondition,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAUTHENTICATED": Unauthenticated,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "DATA_LOSS": DataLoss,
    "UNIMPLEMENTED": Unimplemented,
}


def error_for(code, message):
    """The exception for a status code name and message."""
    return _BY_CODE.get(code, WardError)(message, code)


def from_rpc_error(err):
    """The WardError for a grpc.RpcError (a failed call), message kept."""
    code = err.code() if hasattr(err, "code") else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    details = err.details() if hasattr(err, "details") else None
    return error_for(name, details or str(err))


# pyarrow.flight reports a gRPC failure as an exception whose text carries the status and
# the server's message: "... with message: MSG. gRPC client debug context: CODE:MSG. ...".
_FLIGHT_CONTEXT = re.compile(r"gRPC client debug context: ([A-Z_]+):")
_FLIGHT_MESSAGE = re.compile(r"with message: (.*?)\. gRPC client debug context", re.S)


def from_flight_error(err):
    """The WardError for an exception raised by a pyarrow.flight call, message kept."""
    text = str(err)
    code = None
    found = _FLIGHT_CONTEXT.search(text)
    if found:
        code = found.group(1)
    else:
        import pyarrow as pa
        import pyarrow.flight as fl

        for cls, name in (
            (fl.FlightUnauthenticatedError, "UNAUTHENTICATED"),
            (fl.FlightUnauthorizedError, "PERMISSION_DENIED"),
            (fl.FlightUnavailableError, "UNAVAILABLE"),
            (fl.FlightTimedOutError, "DEADLINE_EXCEEDED"),
            (fl.FlightInternalError, "INTERNAL"),
            (pa.ArrowKeyError, "NOT_FOUND"),
            (pa.ArrowInvalid, "INVALID_ARGUMENT"),
            (pa.ArrowNotImplementedError, "UNIMPLEMENTED"),
        ):
            if isinstance(err, cls):
                code = name
                break
    message = _FLIGHT_MESSAGE.search(text)
    return error_for(code or "UNKNOWN", message.group(1) if message else text)
