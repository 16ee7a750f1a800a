"""The 302-style legacy Kling API (seed ``001_...``, PROTOCOLS.md §3): wire form -> TaskRequest, Job -> envelope.

Six submit paths under ``/klingai/`` each fix a catalog model and a duration (:data:`PATHS`); the
form fields map onto one :class:`~reelserve.tasks.TaskRequest` and the one validator
(:func:`reelserve.catalog.validate.validate`) decides everything model-specific. This module only
checks what the 302 page itself states about its wire format: the option lists of
``aspect_ratio``/``camera_type``, that numbers are numbers, and its image rules (JPG/PNG only,
at most 10 MB, at least 300 px per side: :func:`check_image`).

Every answer is the 302 envelope ``{"result", "status", "message", "data"}``; errors keep it with
``result`` 0 (:func:`error_envelope`, the one place this dialect maps a ReelserveError).
"""

from __future__ import annotations

import io
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reelserve.api.fields import FieldTable
from reelserve.errors import (
    CANCELLED_CODE,
    ErrorKind,
    MediaError,
    ReelserveError,
    ValidationError,
)
from reelserve.tasks import FrameImageInput, Job, JobStatus, Result, TaskRequest

ORIGIN = "m2v"

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""302 page: "file size not more than 10MB" (read as MiB, the lenient reading)."""
MIN_IMAGE_SIDE = 300
"""302 page: "size not less than 300px" (each side)."""
IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}

ASPECT_RATIOS = ("1:1", "16:9", "9:16")
CAMERA_AXES = ("horizontal", "vertical", "zoom", "tilt", "pan", "roll")
CAMERA_PRESETS = ("down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_TYPES = ("", *CAMERA_AXES, *CAMERA_PRESETS)

FORM_FIELDS = (
    "input_image", "tail_image", "prompt", "negative_prompt", "cfg", "aspect_ratio",
    "camera_type", "camera_value", "enable_audio",
)

# 302 task status codes
STATUS_QUEUED = 5
STATUS_RUNNING = 10
STATUS_DONE = 99
STATUS_FAILED = 50


@dataclass(frozen=True)
class PathRoute:
    """What one ``/klingai/<name>`` submit path means.

    ``tail_model`` is the model used when a ``tail_image`` (last frame) is sent; ``None`` means
    the path takes no tail image.
    """

    name: str
    model: str
    duration: float
    text_only: bool = False
    tail_model: str | None = None


PATHS: dict[str, PathRoute] = {
    route.name: route
    for route in (
        # Rapid is Standard: Kling 1.5 Standard (I2V only).
        PathRoute("m2v_15_img2video", "klingai:2@1", 5),
        PathRoute("m2v_15_img2video_10s", "klingai:2@1", 10),
        # HQ is Pro: Kling 1.5 Pro. 1.5 Pro has no last-frame input, so a tail_image switches to
        # Kling 2.1 Pro, the Pro model of the catalog that takes a first and a last frame.
        PathRoute("m2v_img2video_hq", "klingai:2@2", 5, tail_model="klingai:5@2"),
        PathRoute("m2v_img2video_hq_10s", "klingai:2@2", 10, tail_model="klingai:5@2"),
        # Kling 1.5 has no text-to-video; 1.0 Pro is the Pro T2V model of that generation.
        PathRoute("m2v_txt2video_hq_5s", "klingai:1@2", 5, text_only=True),
        PathRoute("m2v_txt2video_hq_10s", "klingai:1@2", 10, text_only=True),
    )
}


def new_task_id() -> str:
    """A 302-style task id: ``kling_`` and 12 hex digits (also the job id)."""
    return f"kling_{secrets.token_hex(6)}"


# ================================================================================================
# Parsing
# ================================================================================================


@dataclass(frozen=True)
class ImageUpload:
    """An image sent as a multipart file part."""

    data: bytes
    filename: str | None = None


FormValue = str | ImageUpload


def _invalid(field: str, message: str, allowed: list[Any] | None = None,
             code: str | None = None) -> ValidationError:
    return ValidationError(code or "invalidParameter", message, parameter=field,
                           allowed_values=allowed)


def route_for(name: str) -> PathRoute:
    """The route of a submit path name, or ``NotFound`` naming the six paths."""
    route = PATHS.get(name)
    if route is None:
        raise ReelserveError(
            "unsupportedPath",
            f"/klingai/{name} is not a 302-style submit path; allowed: "
            + ", ".join(f"/klingai/{p}" for p in PATHS),
            parameter="path",
            allowed_values=list(PATHS),
            kind=ErrorKind.NOT_FOUND,
        )
    return route


def _text(form: Mapping[str, FormValue], field: str) -> str | None:
    value = form.get(field)
    if value is None:
        return None
    if isinstance(value, ImageUpload):
        raise _invalid(field, f"{field} must be a text value, got a file upload")
    value = value.strip()
    return value or None


def _number(form: Mapping[str, FormValue], field: str, what: str) -> float | None:
    text = _text(form, field)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _invalid(field, f"{field} must be a number ({what}), got {text!r}") from None
    if not math.isfinite(value):
        raise _invalid(field, f"{field} must be a finite number ({what}), got {text!r}")
    return value


def _bool(form: Mapping[str, FormValue], field: str) -> bool | None:
    text = _text(form, field)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise _invalid(field, f"{field} must be a boolean (true or false), got {text!r}",
                   ["true", "false"])


def check_form(route: PathRoute, form: Mapping[str, FormValue]) -> None:
    """Wire-level checks that need no image decoding (cheap; call before :func:`check_image`)."""
    unknown = sorted(set(form) - set(FORM_FIELDS))
    if unknown:
        raise ValidationError(
            "unsupportedParameter",
            f"unknown field {unknown[0]!r} for /klingai/{route.name}; allowed: "
            + ", ".join(FORM_FIELDS),
            parameter=unknown[0],
            allowed_values=list(FORM_FIELDS),
        )
    if route.text_only:
        for field in ("input_image", "tail_image"):
            if form.get(field) not in (None, ""):
                raise ValidationError(
                    "unsupportedParameter",
                    f"{field} is not taken by /klingai/{route.name} (text to video); use "
                    "/klingai/m2v_img2video_hq for image to video",
                    parameter=field,
                )
    else:
        if form.get("input_image") in (None, ""):
            raise ValidationError(
                "missingInputImage",
                f"input_image is required by /klingai/{route.name}: the first frame as a JPG/PNG"
                " file or URL",
                parameter="input_image",
            )
        if form.get("tail_image") not in (None, "") and route.tail_model is None:
            raise ValidationError(
                "unsupportedParameter",
                f"tail_image is not taken by /klingai/{route.name}; the HQ paths "
                "(/klingai/m2v_img2video_hq, /klingai/m2v_img2video_hq_10s) take a last frame",
                parameter="tail_image",
            )


MAX_IMAGE_PIXELS = 40_000_000
"""Largest image (width x height) decoded: a small file can declare 30000x30000 in its header."""


def _too_many_pixels(field: str, width: int | None, height: int | None) -> MediaError:
    size = f"{width}x{height} px" if width is not None else "more pixels than Pillow will open"
    return MediaError(
        "invalidImageDimensions", f"{field} declares {size}; the largest image accepted is "
        f"{MAX_IMAGE_PIXELS} pixels (width x height)", parameter=field)


def check_image(data: bytes, field: str) -> tuple[str, int, int]:
    """Apply the 302 image rules; returns ``(content_type, width, height)``.

    Blocking (Pillow reads the header and verifies the file): call it from a thread.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise MediaError(
            "invalidImageSize",
            f"{field} is {len(data)} bytes; the 302-style API accepts at most 10 MB "
            f"({MAX_IMAGE_BYTES} bytes)",
            parameter=field,
            kind=ErrorKind.TOO_LARGE,
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or "unknown"
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_many_pixels(field, width, height)
            if fmt in IMAGE_FORMATS:
                img.verify()
    except Image.DecompressionBombError:
        # A header declaring a gigantic image (Pillow refuses it before we read the size).
        raise _too_many_pixels(field, None, None) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(
            "invalidImageFormat",
            f"{field} is not a readable image ({type(exc).__name__}); send a JPG or PNG file",
            parameter=field,
            allowed_values=["JPG", "PNG"],
        ) from None
    if fmt not in IMAGE_FORMATS:
        raise MediaError(
            "invalidImageFormat",
            f"{field} is a {fmt} image; the 302-style API accepts JPG or PNG only",
            parameter=field,
            allowed_values=["JPG", "PNG"],
        )
    if min(width, height) < MIN_IMAGE_SIDE:
        raise MediaError(
            "invalidImageDimensions",
            f"{field} is {width}x{height} px; each side must be at least {MIN_IMAGE_SIDE} px",
            parameter=field,
        )
    return IMAGE_FORMATS[fmt], width, height


def size_for_aspect(model: str, aspect_ratio: str) -> tuple[int, int] | None:
    """The catalog size of ``model`` with ``aspect_ratio`` (``W:H``), or None when it has none.

    Sizes come from the catalog, so a Pro model maps 16:9 to 1920x1080 and a Standard one to
    1280x720; models that infer their size from the first frame have no list (None).
    """
    from reelserve.catalog import get_catalog

    entry = get_catalog().models.get(model)
    if entry is None:
        return None
    want_w, want_h = (int(p) for p in aspect_ratio.split(":"))
    for width, height in entry.size_list:
        if width * want_h == height * want_w:
            return width, height
    return None


def camera_control(camera_type: str | None, camera_value: float | None) -> dict[str, Any] | None:
    """``camera_type``/``camera_value`` -> a Kling cameraControl object (or None).

    An axis name becomes a ``simple`` move on that axis with ``camera_value``; a preset ignores
    the value (the 302 page sends one with every request).
    """
    if camera_type in (None, ""):
        return None
    if camera_type in CAMERA_PRESETS:
        return {"type": camera_type}
    if camera_value is None or camera_value == 0:
        raise _invalid(
            "camera_value",
            f"camera_value must be a non-zero number from -10 to 10 when camera_type is "
            f"{camera_type!r} (a move on that axis), got {camera_value!r}",
            code="invalidCameraControl",
        )
    return {"type": "simple", "config": {camera_type: camera_value}}


def to_request(
    route: PathRoute,
    form: Mapping[str, FormValue],
    *,
    task_uuid: str,
    input_image: str | None = None,
    tail_image: str | None = None,
) -> TaskRequest:
    """Map a submitted form onto a TaskRequest.

    ``input_image``/``tail_image`` are the already checked and stored images as references the
    worker resolves (an upload UUID); the form's own values for them are ignored here.
    """
    aspect = _text(form, "aspect_ratio")
    if aspect is not None and aspect not in ASPECT_RATIOS:
        raise _invalid("aspect_ratio", f"aspect_ratio is {aspect!r}; allowed: "
                       + ", ".join(ASPECT_RATIOS), list(ASPECT_RATIOS), "invalidAspectRatio")
    camera_type = (_text(form, "camera_type") or "").lower()
    if camera_type not in CAMERA_TYPES:
        raise _invalid("camera_type", f"camera_type is {camera_type!r}; allowed: empty, "
                       + ", ".join(CAMERA_TYPES[1:]), list(CAMERA_TYPES), "invalidCameraControl")
    camera_value = _number(form, "camera_value", "from -10 to 10")
    cfg = _number(form, "cfg", "from 0 to 1")

    model = route.tail_model if tail_image is not None and route.tail_model else route.model
    frames: list[FrameImageInput] = []
    if input_image is not None:
        frames.append(FrameImageInput(image=input_image, frame="first"))
    if tail_image is not None:
        frames.append(FrameImageInput(image=tail_image, frame="last"))
    width = height = None
    if aspect is not None:
        size = size_for_aspect(model, aspect)
        if size is None:
            raise _invalid("aspect_ratio", f"aspect_ratio {aspect!r} has no size on {model} "
                           f"(/klingai/{route.name})", list(ASPECT_RATIOS), "invalidAspectRatio")
        width, height = size
    return TaskRequest(
        task_uuid=task_uuid,
        model=model,
        positive_prompt=_text(form, "prompt"),
        negative_prompt=_text(form, "negative_prompt"),
        cfg_scale=cfg,
        duration=route.duration,
        width=width,
        height=height,
        frame_images=frames,
        camera_control=camera_control(camera_type, camera_value),
        sound=_bool(form, "enable_audio"),
    )


# ================================================================================================
# Errors (the one mapping of ReelserveError onto this dialect)
# ================================================================================================

CANCELLED = {"code": CANCELLED_CODE, "message": "the task was cancelled"}
"""The error of a job cancelled before any error was stored."""

FIELD_NAMES = FieldTable({
    "provider.camera_control.config": "camera_value",
    "provider.camera_control.type": "camera_type",
    "provider.camera_control": "camera_type",
    "provider.sound": "enable_audio",
    "frame_images": "input_image",
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "cfg_scale": "cfg",
    "width": "aspect_ratio",
    "height": "aspect_ratio",
})
"""Neutral field keys -> the 302 form field that carries them."""


def error_envelope(exc: ReelserveError) -> tuple[int, dict[str, Any]]:
    """HTTP status and 302 envelope for a refusal (already in 302 field names): ``result`` 0,
    the message names the field."""
    body: dict[str, Any] = {
        "result": 0,
        "status": exc.http_status,
        "message": exc.message,
        "code": exc.code,
        "data": None,
    }
    if exc.parameter is not None:
        body["parameter"] = exc.parameter
    if exc.allowed_values is not None:
        body["allowedValues"] = exc.allowed_values
    return exc.http_status, body


# ================================================================================================
# Rendering
# ================================================================================================


@dataclass(frozen=True)
class Links:
    """Signed URLs of a job's outputs: the video and its cover (first frame as JPEG)."""

    video: Callable[[Result], str]
    cover: Callable[[Result], str | None]


def task_status(job: Job) -> int:
    """302 status code of a job: 5 queued, 10 generating, 99 done, 50 failed or cancelled."""
    return {
        JobStatus.QUEUED: STATUS_QUEUED,
        JobStatus.RUNNING: STATUS_RUNNING,
        JobStatus.SUCCEEDED: STATUS_DONE,
    }.get(job.status, STATUS_FAILED)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def render_task(job: Job, links: Links) -> dict[str, Any]:
    """The ``data`` object of submit and fetch answers for ``job``."""
    status = task_status(job)
    task: dict[str, Any] = {
        "id": job.id,
        "type": job.origin_data.get("type", job.spec.workflow.value),
        "status": status,
        "createTime": _ms(job.created_at),
        "updateTime": _ms(job.updated_at),
    }
    if status == STATUS_FAILED:
        # The stored error carries neutral field keys; say them in 302 field names.
        error = FIELD_NAMES.render(ReelserveError.from_dict(job.error or CANCELLED))
        task["message"] = error.message
        task["code"] = error.code
        if error.parameter is not None:
            task["parameter"] = error.parameter
    works: list[dict[str, Any]] = []
    if job.status is JobStatus.SUCCEEDED:
        for result in job.results:
            work: dict[str, Any] = {
                "workId": result.index,
                "status": STATUS_DONE,
                "contentType": "video",
                "resource": {
                    "resource": links.video(result),
                    "width": result.width,
                    "height": result.height,
                    "duration": _ms(result.duration),
                },
            }
            cover = links.cover(result)
            if cover is not None:
                work["cover"] = {"resource": cover, "width": result.width,
                                 "height": result.height}
            works.append(work)
    return {"status": status, "task": task, "works": works}


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    """The 302 success envelope."""
    return {"result": 1, "status": 200, "message": "", "data": data}
