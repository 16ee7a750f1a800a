"""The one error tree of reelserve.

Every refusal anywhere in the system is a :class:`ReelserveError`. It carries the fields of a
Runware error object (``code``, ``message``, ``parameter``, ``allowedValues``) and a ``kind`` that
each wire dialect maps to its own status codes in exactly one place (its ``schema.py``).

Codes keep the prefixes the newer Runware SDK buckets on: ``invalid*``, ``missing*``,
``unsupported*``, and ``*NotFound`` for unknown ids.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any


class ErrorKind(enum.StrEnum):
    """Broad class of an error; dialects map it to HTTP status / their own code ranges."""

    INVALID = "invalid"  # the request is wrong (400)
    AUTH = "auth"  # bad or missing credentials (401)
    FORBIDDEN = "forbidden"  # valid credentials, not allowed (403)
    NOT_FOUND = "not_found"  # unknown id (404)
    CONFLICT = "conflict"  # duplicate id (409)
    TOO_LARGE = "too_large"  # body or media over a size cap (413)
    RATE_LIMIT = "rate_limit"  # per-key limits (429)
    UNAVAILABLE = "unavailable"  # engine/model not available here (503)
    TIMEOUT = "timeout"  # provider/engine took too long (504)
    INTERNAL = "internal"  # our bug or an engine crash (500)
    STORAGE_FULL = "storage_full"  # the disk (or database) is full: try again later (507)


_HTTP_STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.AUTH: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.RATE_LIMIT: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.INTERNAL: 500,
    ErrorKind.STORAGE_FULL: 507,
}


class ReelserveError(Exception):
    """A refusal that names the field, the bad value and what is allowed.

    Args:
        code: camelCase identifier, e.g. ``invalidDuration``.
        message: human text naming the bad value and the allowed ones.
        parameter: the request field as a dotted path (``inputs.frameImages``), if any.
        allowed_values: the finite set of allowed values, where there is one.
        kind: broad class used for status-code mapping.
    """

    default_kind: ErrorKind = ErrorKind.INVALID

    def __init__(
        self,
        code: str,
        message: str,
        *,
        parameter: str | None = None,
        allowed_values: Sequence[Any] | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parameter = parameter
        self.allowed_values = list(allowed_values) if allowed_values is not None else None
        self.kind = kind or self.default_kind

    @property
    def http_status(self) -> int:
        """HTTP status for dialects that use plain HTTP semantics."""
        return _HTTP_STATUS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """Runware-shaped error fields (without taskUUID/taskType, which the caller scopes)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            out["parameter"] = self.parameter
        if self.allowed_values is not None:
            out["allowedValues"] = self.allowed_values
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReelserveError:
        """Rebuild an error stored with :meth:`to_dict` (plus an optional ``kind``)."""
        kind = data.get("kind")
        return cls(
            str(data.get("code", "internalError")),
            str(data.get("message", "")),
            parameter=data.get("parameter"),
            allowed_values=data.get("allowedValues"),
            kind=ErrorKind(kind) if kind else None,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, parameter={self.parameter!r}, message={self.message!r})"


class ValidationError(ReelserveError):
    """The request breaks a rule of the wire format or of the model catalog."""


class MediaError(ReelserveError):
    """An input image/video cannot be used (undecodable, wrong type, out of limits)."""


class AuthError(ReelserveError):
    """Bad or missing credentials."""

    default_kind = ErrorKind.AUTH


class NotFoundError(ReelserveError):
    """An unknown task, media or model id."""

    default_kind = ErrorKind.NOT_FOUND


class ConflictError(ReelserveError):
    """A client-chosen id that already exists."""

    default_kind = ErrorKind.CONFLICT


class RateLimitError(ReelserveError):
    """Per-key submit rate or in-flight limit reached.

    ``retry_after``: seconds until the limit admits the request again, when the limiter knows
    (every dialect's 429 answer carries it as ``Retry-After``; see ``api/serving.py``).
    """

    default_kind = ErrorKind.RATE_LIMIT
    retry_after: float | None = None

    def __init__(self, code: str, message: str, *, retry_after: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(code, message, **kwargs)
        self.retry_after = retry_after


class InFlightLimitError(RateLimitError):
    """Per-key limit on queued + running tasks reached.

    A concurrency limit rather than a rate: dialects that tell the two apart (Kling: 1303
    against 1302 for "too fast") map this subclass; the others see a plain rate limit.
    """


class OutboundBlockedError(ReelserveError):
    """An outbound URL points somewhere the netguard refuses (SSRF rules) or cannot be fetched."""


class EngineError(ReelserveError):
    """The engine failed while generating, or cannot serve the request on this install."""

    default_kind = ErrorKind.INTERNAL


class WorkerBrokenError(EngineError):
    """The worker itself can no longer render, through no fault of the job: a render split over
    a GPU group failed (a rank died, a collective broke), and the ranks still alive cannot go on
    without it. The worker writes nothing for the job and claims no more; its lease runs out
    (counted as a loss, so a job that breaks every group ends as ``workerLost``) and the
    restarted group takes it."""

    default_kind = ErrorKind.UNAVAILABLE


STORAGE_FULL_CODE = "insufficientStorage"
"""The code of a refusal because the server's disk or job database is full (HTTP 507)."""


class StorageFullError(ReelserveError):
    """No space left where the server keeps jobs or files (code :data:`STORAGE_FULL_CODE`).

    A temporary condition: the client may retry later; a worker puts its job back and backs
    off instead of failing it.
    """

    default_kind = ErrorKind.STORAGE_FULL


def storage_full(where: str, cause: BaseException | None = None) -> StorageFullError:
    """The refusal for a full disk at ``where`` (``the job database``, ``artifact storage``)."""
    detail = f" ({cause})" if cause is not None else ""
    return StorageFullError(STORAGE_FULL_CODE, f"no space left in {where}{detail}; nothing "
                            "was stored; try again later")


CANCELLED_CODE = "taskCancelled"
"""The one code of a cancelled task, whoever noticed the cancellation (store, worker, engine,
encoder) and whichever dialect reports it."""


CONTENT_POLICY_CODE = "contentPolicyViolation"
"""The code of a task whose input, or whose withheld output, the content checker flagged."""


class ContentPolicyError(ReelserveError):
    """The content checker flagged an input, or an output the server withholds
    (code :data:`CONTENT_POLICY_CODE`; see ``docs/safety.md``)."""

    default_kind = ErrorKind.FORBIDDEN


class CancelledError(ReelserveError):
    """The job was cancelled while it ran (its code is :data:`CANCELLED_CODE`)."""


def invalid(
    code: str,
    message: str,
    parameter: str | None = None,
    allowed_values: Sequence[Any] | None = None,
) -> ValidationError:
    """Shorthand used by validators: ``raise invalid("invalidDuration", "...", "duration", [5, 10])``."""
    return ValidationError(code, message, parameter=parameter, allowed_values=allowed_values)
