"""Exceptions raised by the Quiver client.

Every failure is a :class:`QuiverError`: a gRPC status returned by the server, a transport
failure (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) or an argument the client rejected before
sending anything (``INVALID_ARGUMENT``). ``.code`` is the gRPC status name and ``.message`` the
server's (or the client's) explanation.
"""

__all__ = [
    "QuiverError", "NotFound", "InvalidArgument", "AlreadyExists", "Unavailable",
    "ResourceExhausted", "DeadlineExceeded", "FailedPrecondition", "error_from_rpc",
]


class QuiverError(Exception):
    """A failed Quiver call.

    Attributes:
        code: the gRPC status name, e.g. ``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``, ``"INTERNAL"``.
        message: the explanation (the gRPC status details).
        partial: see below.
    """

    #: The status name a subclass stands for (``None`` on the base class).
    CODE = None
    #: For calls the client splits into several requests (upsert, upsert_many, delete by ids):
    #: the WriteResult of the requests that succeeded before the failing one, else None.
    partial = None

    def __init__(self, code, message=""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return f"{self.code}: {self.message}" if self.message else str(self.code)

    def __repr__(self):
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"

    def __reduce__(self):
        return (_rebuild, (type(self), self.code, self.message))


def _rebuild(cls, code, message):
    return cls(code, message) if cls is QuiverError else cls(message)


class _Coded(QuiverError):
    """A QuiverError whose code is fixed by its class: ``NotFound("no such collection")``."""

    def __init__(self, message="", *, code=None):
        super().__init__(code or self.CODE, message)


class NotFound(_Coded):
    """NOT_FOUND: the collection (or a referenced point, snapshot, node) does not exist."""
    CODE = "NOT_FOUND"


class InvalidArgument(_Coded, ValueError):
    """INVALID_ARGUMENT: a bad parameter, vector, payload, id or filter.

    Also raised by the client itself, before sending, for arguments it cannot encode (it is a
    ``ValueError`` too).
    """
    CODE = "INVALID_ARGUMENT"


class AlreadyExists(_Coded):
    """ALREADY_EXISTS: e.g. a collection with that name (and another configuration) exists."""
    CODE = "ALREADY_EXISTS"


class Unavailable(_Coded):
    """UNAVAILABLE: the server cannot be reached, is shutting down or has no leader (retryable)."""
    CODE = "UNAVAILABLE"


class ResourceExhausted(_Coded):
    """RESOURCE_EXHAUSTED: a request over a size or count limit, or the server out of memory."""
    CODE = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(_Coded):
    """DEADLINE_EXCEEDED: no answer within the call's timeout (a write's outcome is unknown)."""
    CODE = "DEADLINE_EXCEEDED"


class FailedPrecondition(_Coded):
    """FAILED_PRECONDITION: the cluster is not in a state that allows the call."""
    CODE = "FAILED_PRECONDITION"


_BY_CODE = {cls.CODE: cls for cls in (NotFound, InvalidArgument, AlreadyExists, Unavailable,
                                      ResourceExhausted, DeadlineExceeded, FailedPrecondition)}


def error_for(code, message=""):
    """The exception for a status name: the matching subclass, else a plain QuiverError."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else QuiverError(code, message)


def error_from_rpc(err):
    """Converts a ``grpc.RpcError`` (a failed call) into the matching QuiverError."""
    code = err.code() if hasattr(err, "code") else None
    name = getattr(code, "name", None) or "UNKNOWN"
    details = err.details() if hasattr(err, "details") else None
    return error_for(name, details or "")
