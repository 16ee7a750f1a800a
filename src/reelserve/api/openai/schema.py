"""The OpenAI-style Videos API (PROTOCOLS.md §5): JSON/form -> TaskRequest, Job -> video object.

The convention SGLang Diffusion and vLLM-Omni follow: ``POST /v1/videos`` with ``model``,
``prompt``, ``seconds``, ``size`` (``WxH``) and an optional ``input_reference`` image (first
frame), answering a video object ``{id, object: "video", model, status, progress, created_at,
seconds, size, ...}`` with ``status`` queued | in_progress | completed | failed.

``model`` is a catalog AIR id (default :data:`DEFAULT_MODEL`). Errors use OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with the HTTP status of the error kind
(:func:`error_envelope`, the one mapping of this dialect).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any

from reelserve.api.fields import FieldTable
from reelserve.api.parsing import ascii_int
from reelserve.errors import CANCELLED_CODE, ErrorKind, ReelserveError, ValidationError
from reelserve.tasks import FrameImageInput, Job, JobStatus, TaskRequest

ORIGIN = "openai"
DEFAULT_MODEL = "klingai:1@1"
FIELDS = ("model", "prompt", "seconds", "size", "input_reference", "negative_prompt", "seed")

QUEUED = "queued"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"


def new_video_id() -> str:
    """An OpenAI-style video id (also the job id); never ``text2video``/``image2video``."""
    return f"video_{secrets.token_hex(16)}"


def _str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "seconds":
        return str(value)
    if not isinstance(value, str):
        raise ValidationError("invalidParameter", f"{key} must be a string, got {value!r:.60}",
                              parameter=key)
    return value.strip() or None


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValidationError("invalidDuration", f"seconds must be a number of seconds such as "
                              f"'5', got {text!r:.60}", parameter="seconds") from None
    if not math.isfinite(value):
        raise ValidationError("invalidDuration", f"seconds must be finite, got {text!r}",
                              parameter="seconds")
    return value


def _size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    raw_w, sep, raw_h = text.lower().partition("x")
    # ASCII digits only: "²" passes str.isdigit() but not int().
    width, height = ascii_int(raw_w.strip(), max_digits=6), ascii_int(raw_h.strip(), max_digits=6)
    if not sep or width is None or height is None:
        raise ValidationError("invalidDimensions", f"size must be WIDTHxHEIGHT such as "
                              f"'1280x720', got {text!r:.60}", parameter="size")
    return width, height


def reference_value(value: Any) -> str | None:
    """A JSON ``input_reference``: a URL/data URI/base64 string, or ``{"image_url": ...}``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("image_url"), str):
        return str(value["image_url"])
    raise ValidationError("invalidInputReference", "input_reference must be an image file, a URL"
                          " or data URI string, or {\"image_url\": ...}",
                          parameter="input_reference")


def to_request(body: Mapping[str, Any], *, task_uuid: str,
               input_reference: str | None = None) -> TaskRequest:
    """Map a create body onto a TaskRequest (types and shape only; the validator does the rest).

    ``input_reference`` is the image reference to use as the first frame (an upload UUID for a
    multipart file, or the JSON value).
    """
    unknown = [k for k, v in body.items() if k not in FIELDS and v not in (None, "")]
    width, height = _size(_str(body, "size"))
    seed = body.get("seed")
    if seed is not None:
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise ValidationError("invalidSeed", f"seed must be an integer, got {seed!r:.60}",
                                  parameter="seed") from None
    frames = ([FrameImageInput(image=input_reference, frame="first")]
              if input_reference is not None else [])
    return TaskRequest(
        task_uuid=task_uuid,
        model=_str(body, "model") or DEFAULT_MODEL,
        positive_prompt=_str(body, "prompt"),
        negative_prompt=_str(body, "negative_prompt"),
        duration=_seconds(_str(body, "seconds")),
        width=width,
        height=height,
        seed=seed,
        frame_images=frames,
        unsupported=unknown,
    )


# ================================================================================================
# Errors (the one mapping of ReelserveError onto this dialect)
# ================================================================================================

_TYPES = {
    ErrorKind.INVALID: "invalid_request_error",
    ErrorKind.AUTH: "authentication_error",
    ErrorKind.FORBIDDEN: "permission_error",
    ErrorKind.NOT_FOUND: "invalid_request_error",
    ErrorKind.CONFLICT: "invalid_request_error",
    ErrorKind.TOO_LARGE: "invalid_request_error",
    ErrorKind.RATE_LIMIT: "rate_limit_error",
    ErrorKind.UNAVAILABLE: "server_error",
    ErrorKind.TIMEOUT: "server_error",
    ErrorKind.INTERNAL: "server_error",
}

FIELD_NAMES = FieldTable({
    "frame_images": "input_reference",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "duration": "seconds",
    "width": "size",
    "height": "size",
})
"""Neutral field keys -> OpenAI-style fields (``missingPositivePrompt`` reads ``missingPrompt``)."""


def error_envelope(exc: ReelserveError) -> tuple[int, dict[str, Any]]:
    """HTTP status and ``{"error": {...}}`` for a refusal (already in OpenAI field names)."""
    error: dict[str, Any] = {"message": exc.message,
                             "type": _TYPES.get(exc.kind, "server_error"),
                             "param": exc.parameter, "code": exc.code}
    return exc.http_status, {"error": error}


def job_error(job: Job) -> dict[str, Any] | None:
    """The ``error`` of a failed video: ``{code, message}``."""
    if job.status is JobStatus.CANCELLED:
        return {"code": CANCELLED_CODE, "message": "the video was cancelled"}
    if job.error:
        error = FIELD_NAMES.render(ReelserveError.from_dict(job.error))
        return {"code": error.code, "message": error.message}
    return None


# ================================================================================================
# Rendering
# ================================================================================================


def video_status(job: Job) -> str:
    """queued | in_progress | completed | failed (cancelled reads failed)."""
    return {
        JobStatus.QUEUED: QUEUED,
        JobStatus.RUNNING: IN_PROGRESS,
        JobStatus.SUCCEEDED: COMPLETED,
    }.get(job.status, FAILED)


def render_video(job: Job, *, expires_at: float | None = None) -> dict[str, Any]:
    """The video object of ``job``."""
    spec = job.spec
    width = spec.width or (job.results[0].width if job.results else None)
    height = spec.height or (job.results[0].height if job.results else None)
    seconds = spec.duration or (job.results[0].duration if job.results else None)
    status = video_status(job)
    return {
        "id": job.id,
        "object": "video",
        "model": spec.model,
        "status": status,
        "progress": int(min(100.0, max(0.0, job.progress))) if status != COMPLETED else 100,
        "created_at": int(job.created_at),
        "completed_at": int(job.updated_at) if job.status.is_terminal else None,
        "expires_at": int(expires_at) if expires_at is not None and status == COMPLETED else None,
        "seconds": f"{seconds:g}" if seconds is not None else None,
        "size": f"{width}x{height}" if width and height else None,
        "prompt": spec.positive_prompt,
        "remixed_from_video_id": None,
        "error": job_error(job) if status == FAILED else None,
    }


def render_deleted(job_id: str) -> dict[str, Any]:
    """The answer of ``DELETE /v1/videos/{id}``."""
    return {"id": job_id, "object": "video.deleted", "deleted": True}


def render_list(videos: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page of ``GET /v1/videos``."""
    return {
        "object": "list",
        "data": videos,
        "first_id": videos[0]["id"] if videos else None,
        "last_id": videos[-1]["id"] if videos else None,
        "has_more": has_more,
    }
