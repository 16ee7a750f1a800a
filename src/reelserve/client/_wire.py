"""The Runware REST protocol without I/O: task building, reply parsing, error mapping, polling state.

:class:`~reelserve.client.Client` and :class:`~reelserve.client.AsyncClient` differ only in how
they send a request and sleep; everything they decide is decided here, once, so the sync and
async clients cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelserve.errors import (
    CANCELLED_CODE,
    AuthError,
    CancelledError,
    ConflictError,
    EngineError,
    ErrorKind,
    MediaError,
    NotFoundError,
    OutboundBlockedError,
    RateLimitError,
    ReelserveError,
    ValidationError,
)

API_KEY_ENV = "REELSERVE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"

ProgressCallback = Callable[[int], None]
"""Called with the task's progress (0-100) each time a poll reports it."""


def resolve_api_key(api_key: str | None) -> str | None:
    """The explicit key, else ``REELSERVE_API_KEY``, else None (a loopback server without keys)."""
    if api_key:
        return api_key
    return os.environ.get(API_KEY_ENV) or None


def new_task_uuid() -> str:
    """A fresh taskUUID (UUID v4, as the protocol asks)."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class VideoResult:
    """One generation of a ``videoInference`` task, as a getResponse item carries it.

    ``status`` is ``"success"`` for a finished video, ``"processing"`` for a task still running
    (then only ``task_uuid`` and ``progress`` are set). Exactly one of ``url``, ``base64_data``
    and ``data_uri`` is set on a success, following the request's ``outputType``.
    """

    task_uuid: str
    status: str
    video_uuid: str | None = None
    url: str | None = None
    base64_data: str | None = None
    data_uri: str | None = None
    seed: int | None = None
    cost: float | None = None
    nsfw: bool | None = None
    progress: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> VideoResult:
        """Build from a wire item (``videoUUID``, ``videoURL``, ``seed``, ...)."""
        status = item.get("status") or ("success" if item.get("videoUUID") else "processing")
        return cls(
            task_uuid=str(item.get("taskUUID", "")),
            status=str(status),
            video_uuid=_opt_str(item.get("videoUUID")),
            url=_opt_str(item.get("videoURL")),
            base64_data=_opt_str(item.get("videoBase64Data")),
            data_uri=_opt_str(item.get("videoDataURI")),
            seed=item["seed"] if isinstance(item.get("seed"), int) else None,
            cost=float(item["cost"]) if isinstance(item.get("cost"), int | float) else None,
            nsfw=item["NSFWContent"] if isinstance(item.get("NSFWContent"), bool) else None,
            progress=item["progress"] if isinstance(item.get("progress"), int) else None,
            raw=dict(item),
        )

    @property
    def done(self) -> bool:
        """Whether this item is a finished video."""
        return self.status == "success"

    def inline_bytes(self) -> bytes | None:
        """The video bytes for ``base64Data``/``dataURI`` output (None for ``URL`` output)."""
        if self.base64_data is not None:
            return _b64decode(self.base64_data)
        if self.data_uri is not None:
            return _b64decode(self.data_uri.partition(",")[2])
        return None

    def extension(self) -> str:
        """File extension of the video (from the URL path or the data URI's media type)."""
        if self.url is not None:
            suffix = Path(self.url.split("?", 1)[0]).suffix.lstrip(".")
            if suffix:
                return suffix.lower()
        if self.data_uri is not None:
            media_type = self.data_uri[5:].partition(";")[0]
            return _EXTENSIONS.get(media_type, "mp4")
        return "mp4"


_EXTENSIONS = {"video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov"}


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_response(f"the video data is not valid base64: {exc}") from None


# ------------------------------------------------------------------------------------ errors

# Codes the server sends whose class the prefix rules in error_from_wire would get wrong.
_CODE_CLASSES: dict[str, type[ReelserveError]] = {
    "invalidApiKey": AuthError,
    "conflictTaskUUID": ConflictError,
    "rateLimitExceeded": RateLimitError,
    CANCELLED_CODE: CancelledError,
    "workerLost": EngineError,
    "engineFailed": EngineError,
    "internalError": EngineError,
    "modelUnavailable": EngineError,
    "modelLoadFailed": EngineError,
    "modelWeightsNotFound": EngineError,
    # media/netguard.py: an input URL the server refused or could not fetch
    "invalidURL": OutboundBlockedError,
    "blockedAddress": OutboundBlockedError,
    "fetchFailed": OutboundBlockedError,
    "fetchTimeout": OutboundBlockedError,
    "tooManyRedirects": OutboundBlockedError,
    "mediaTooLarge": MediaError,
}
_CODE_KINDS: dict[str, ErrorKind] = {
    "payloadTooLarge": ErrorKind.TOO_LARGE,
    "mediaTooLarge": ErrorKind.TOO_LARGE,
    "timeoutProvider": ErrorKind.TIMEOUT,
    "fetchTimeout": ErrorKind.TIMEOUT,
    "modelUnavailable": ErrorKind.UNAVAILABLE,
    "modelWeightsNotFound": ErrorKind.UNAVAILABLE,
}


def error_from_wire(error: dict[str, Any], http_status: int | None = None) -> ReelserveError:
    """Rebuild a server error object as the matching :mod:`reelserve.errors` class.

    The wire carries no error class, only ``code`` (and the HTTP status), so the class is chosen
    from the code the same way the newer Runware SDK buckets them: ``*NotFound`` is a
    :class:`~reelserve.errors.NotFoundError`, ``invalid*``/``missing*``/``unsupported*`` a
    :class:`~reelserve.errors.ValidationError` (media problems included: the wire does not tell
    them apart), a few known codes their own class, anything else a plain
    :class:`~reelserve.errors.ReelserveError` of kind ``internal``. ``code``, ``message``,
    ``parameter`` and ``allowed_values`` are the server's, unchanged.
    """
    code = str(error.get("code") or "unknownError")
    message = str(error.get("message") or code)
    cls = _CODE_CLASSES.get(code)
    if cls is None:
        if http_status == 401:
            cls = AuthError
        elif code.endswith("NotFound"):
            cls = NotFoundError
        elif code.startswith(("invalid", "missing", "unsupported")):
            cls = ValidationError
        else:
            cls = ReelserveError
    allowed = error.get("allowedValues")
    parameter = error.get("parameter")
    return cls(
        code,
        message,
        parameter=parameter if isinstance(parameter, str) else None,
        allowed_values=allowed if isinstance(allowed, list) else None,
        # An unknown code is not known to be the caller's fault: do not call it a refusal.
        kind=_CODE_KINDS.get(code) or (ErrorKind.INTERNAL if cls is ReelserveError else None),
    )


def invalid_response(detail: str) -> ReelserveError:
    """The server answered something that is not the Runware envelope."""
    return ReelserveError("invalidServerResponse", f"the server's reply is not a Runware "
                          f"response: {detail}", kind=ErrorKind.INTERNAL)


def unreachable(url: str, exc: Exception) -> ReelserveError:
    """The server could not be reached (connection refused, DNS, TLS, timeout)."""
    return ReelserveError("serverUnreachable", f"cannot reach the reelserve server at {url}: "
                          f"{type(exc).__name__}: {exc}", kind=ErrorKind.UNAVAILABLE)


def wait_timeout(task_uuid: str, timeout: float) -> ReelserveError:
    """The client stopped waiting; the task itself keeps running on the server."""
    return ReelserveError(
        "timeoutClient", f"task {task_uuid} did not finish within {timeout:g} s; it keeps "
        "running on the server: poll it again with get_response or wait", parameter="taskUUID",
        kind=ErrorKind.TIMEOUT)


def parse_reply(status_code: int, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(data, errors)`` of a ``POST /v1`` reply; raises for a reply that is not the envelope."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise invalid_response(f"HTTP {status_code}, not JSON: {body[:200]!r}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data", []), list):
        raise invalid_response(f"HTTP {status_code}, unexpected JSON {str(payload)[:200]}")
    data = [d for d in payload.get("data", []) if isinstance(d, dict)]
    errors = [e for e in payload.get("errors", []) or [] if isinstance(e, dict)]
    if status_code >= 400 and not errors:
        raise invalid_response(f"HTTP {status_code} without an error object")
    return data, errors


def raise_errors(errors: list[dict[str, Any]], http_status: int | None = None) -> None:
    """Raise the first error of a reply, if any (one task per request: there is at most one)."""
    if errors:
        raise error_from_wire(errors[0], http_status)


# ------------------------------------------------------------------------------------ tasks


def media_value(source: str | os.PathLike[str] | bytes, parameter: str = "image") -> str:
    """What an upload task sends for ``source``.

    Bytes are sent as raw base64 (the server sniffs the type). A ``str`` that is an http(s) URL
    or a data URI is passed through for the server to fetch or decode; any other ``str`` or path
    is a local file, read here.
    """
    if isinstance(source, bytes | bytearray):
        return base64.b64encode(bytes(source)).decode("ascii")
    if isinstance(source, str) and source.startswith(("http://", "https://", "data:")):
        return source
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MediaError("invalidMediaPath", f"cannot read {str(path)!r}: {exc.strerror or exc}",
                         parameter=parameter) from None
    return base64.b64encode(data).decode("ascii")


def video_task(params: dict[str, Any]) -> dict[str, Any]:
    """A ``videoInference`` task from wire parameters, submitted async with a fresh taskUUID.

    The client always polls, so ``deliveryMethod`` must be absent or ``"async"``; a caller-chosen
    ``taskUUID`` is kept (the server answers ``conflictTaskUUID`` when it already exists).
    """
    method = params.get("deliveryMethod", "async")
    if method != "async":
        raise ValidationError(
            "invalidDeliveryMethod", f"the client submits tasks async and polls getResponse; "
            f"deliveryMethod must be 'async' or left out, got {method!r}",
            parameter="deliveryMethod", allowed_values=["async"])
    task: dict[str, Any] = {"taskType": "videoInference", "taskUUID": new_task_uuid()}
    task.update(params)
    task["deliveryMethod"] = "async"
    return task


def number_results(params: dict[str, Any]) -> int:
    """How many videos a task asked for (the server validates the value itself)."""
    value = params.get("numberResults", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


class Collector:
    """Gathers one task's videos across getResponse polls.

    getResponse hands each finished video out once, so the collector keeps what earlier polls
    returned. If a poll answers with no item at all, the task ended and its videos were already
    taken (by another poller); then :attr:`needs_details` asks for ``getTaskDetails``, whose
    ``response`` holds every result again.
    """

    def __init__(self, task_uuid: str, expected: int,
                 on_progress: ProgressCallback | None = None) -> None:
        self.task_uuid = task_uuid
        self.expected = expected
        self.on_progress = on_progress
        self.results: dict[str, VideoResult] = {}
        self.needs_details = False

    @property
    def complete(self) -> bool:
        """Whether every expected video arrived."""
        return len(self.results) >= self.expected

    def feed(self, data: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        """Take one poll's reply; raises the task's error if it failed."""
        raise_errors(errors)
        self.needs_details = not data
        for item in data:
            result = VideoResult.from_item(item)
            if result.done and result.video_uuid:
                self.results.setdefault(result.video_uuid, result)
            elif result.progress is not None and self.on_progress is not None:
                self.on_progress(result.progress)
        if self.complete and self.on_progress is not None:
            self.on_progress(100)

    def feed_details(self, details: dict[str, Any]) -> None:
        """Take a ``getTaskDetails`` item (after a poll answered with nothing)."""
        response = details.get("response")
        if not isinstance(response, dict):
            raise invalid_response("getTaskDetails carries no response")
        data = [d for d in response.get("data", []) if isinstance(d, dict)]
        errors = [e for e in response.get("errors", []) or [] if isinstance(e, dict)]
        self.feed(data, errors)
        self.needs_details = False
        if not self.complete and all(VideoResult.from_item(d).done for d in data):
            # Terminal with fewer videos than asked for and no error: nothing more will come.
            raise EngineError("incompleteResults", f"task {self.task_uuid} ended with "
                              f"{len(self.results)} of {self.expected} videos",
                              parameter="numberResults")

    def ordered(self) -> list[VideoResult]:
        """The videos in the order the server delivered them."""
        return list(self.results.values())


# ------------------------------------------------------------------------------------ files


def base_url(url: str) -> str:
    """The server root for ``url`` (``http://host:8000``, ``.../`` and ``.../v1`` all accepted)."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise ValidationError("invalidUrl", f"the server URL must start with http:// or "
                              f"https://, got {url!r}", parameter="url")
    return root


def download_target(result: VideoResult, path: str | os.PathLike[str]) -> Path:
    """Where :meth:`Client.download` writes ``result``: ``path``, or ``<videoUUID>.<ext>``
    inside it when ``path`` is a directory (an existing one, or a name ending in ``/``, which
    is created)."""
    if not result.done:
        raise ValidationError("invalidResult", f"task {result.task_uuid} has no finished video "
                              f"yet (status {result.status!r})", parameter="result")
    target = Path(path)
    if str(path).endswith(("/", os.sep)):
        target.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        target = target / f"{result.video_uuid}.{result.extension()}"
    return target


def download_error(status_code: int, url: str) -> ReelserveError:
    """A media URL that did not answer 200 (expired: 410, bad signature or deleted: 404)."""
    where = url.split("?", 1)[0]
    if status_code == 410:
        return ReelserveError("mediaExpired", f"the video URL {where} has expired (the "
                              "task's ttl passed); ask for a longer ttl when submitting",
                              parameter="videoURL", kind=ErrorKind.NOT_FOUND)
    if status_code == 404:
        return NotFoundError("mediaNotFound", f"the video at {where} does not exist (deleted, "
                             "or the URL signature is wrong)", parameter="videoURL")
    return ReelserveError("downloadFailed", f"downloading {where} answered HTTP {status_code}",
                          parameter="videoURL", kind=ErrorKind.UNAVAILABLE)


def partial_path(target: Path) -> Path:
    """The temporary name a download is written under, renamed into place when complete."""
    return target.with_name(target.name + ".part")


# ------------------------------------------------------------------------------------ /v1/tasks

TASKS_PATH = "/v1/tasks"
AUTH_MODE_HEADER = "x-reelserve-auth"
"""``keys`` or ``keyless``: whether the server checks API keys (sent with every /v1/tasks answer)."""


def task_params(status: str | list[str] | None, limit: int,
                cursor: str | None) -> dict[str, str | int]:
    """Query parameters of ``GET /v1/tasks``."""
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if cursor:
        params["cursor"] = cursor
    return params


def parse_task_reply(status_code: int, body: bytes) -> dict[str, Any]:
    """The JSON object of a ``/v1/tasks`` answer; raises the server's error for a refusal.

    Error bodies come in the app's Runware-like ``{"errors": [...]}`` shape (or ``{"error": {}}``).
    A 404 without an error object means the server has no task API (an older reelserve).
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        if status_code == 404:
            raise ReelserveError("unsupportedTaskApi", "this server has no /v1/tasks API "
                                 "(an older reelserve?)", kind=ErrorKind.UNAVAILABLE)
        raise invalid_response(f"HTTP {status_code}, not a JSON object: {body[:200]!r}")
    if status_code >= 400:
        errors = payload.get("errors")
        error = errors[0] if isinstance(errors, list) and errors else payload.get("error")
        if isinstance(error, dict):
            raise error_from_wire(error, status_code)
        if status_code == 404:
            raise ReelserveError("unsupportedTaskApi", "this server has no /v1/tasks API "
                                 "(an older reelserve?)", kind=ErrorKind.UNAVAILABLE)
        raise invalid_response(f"HTTP {status_code} without an error object")
    return payload


def task_results(task: dict[str, Any]) -> list[VideoResult]:
    """The finished videos of a ``/v1/tasks`` task object, as :class:`VideoResult` items."""
    results = []
    for item in task.get("results") or []:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            results.append(VideoResult(
                task_uuid=str(task.get("taskUUID", "")), status="success",
                video_uuid=_opt_str(item.get("videoUUID")), url=item["url"],
                seed=item["seed"] if isinstance(item.get("seed"), int) else None,
                cost=None, raw=dict(item)))
    return results
