"""The Runware ``videoInference`` wire model and its conversion to a :class:`TaskRequest`.

Parsing only checks JSON *types* and the request's *shape*; every semantic rule (sizes,
durations, limits, workflows) belongs to the one validator, :func:`reelserve.catalog.validate.validate`.
Unknown keys are not errors here: their dotted paths go to ``TaskRequest.unsupported`` and the
validator refuses them with ``unsupportedParameter``.

Both input shapes clients send are accepted:

* current: ``inputs.{frameImages, referenceImages, referenceVideos, video}`` with frame items as a
  plain image string or ``{"image": ..., "frame": "first"|"last"|0|-1}``;
* legacy (old official SDKs): top-level ``frameImages: [{"inputImage": ..., "frame": ...}]`` and
  top-level ``referenceImages``. ``image`` and ``inputImage`` are accepted in both places.

A JSON ``null`` is treated as an omitted key. Pydantic errors never escape: :func:`_wire_error`
turns them into :class:`reelserve.errors.ValidationError` naming the parameter.

Result rendering (``Job`` -> wire items) lives further down in this module, below the parsing
section.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from reelserve.catalog.validate import short_repr
from reelserve.errors import ValidationError
from reelserve.tasks import FrameImageInput, TaskRequest

TASK_TYPE = "videoInference"

# ================================================================================================
# Parsing: wire JSON -> TaskRequest
# ================================================================================================


class _Wire(BaseModel):
    """Base of the wire models: strict JSON types, unknown keys kept (reported as unsupported)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class WireFrameImage(_Wire):
    """A frame image in object form. ``inputImage`` is the legacy spelling of ``image``.

    ``frame`` stays untyped here so a wrong value gets the validator's ``invalidFrame`` error
    (with the allowed values) rather than a generic type error.
    """

    image: str | None = None
    inputImage: str | None = None
    frame: Any = None


class WireInputs(_Wire):
    """``inputs``: the media a generation starts from."""

    frameImages: list[Any] | None = None
    referenceImages: list[str] | None = None
    referenceVideos: list[str] | None = None
    video: str | None = None


class WireKlingSettings(_Wire):
    """``providerSettings.klingai`` (PROTOCOLS.md §1.5)."""

    sound: bool | None = None
    keepOriginalSound: bool | None = None
    cameraControl: dict[str, Any] | None = None


class WireProviderSettings(_Wire):
    """``providerSettings``: only ``klingai`` is known; other providers are unsupported."""

    klingai: WireKlingSettings | None = None


class WireSafety(_Wire):
    """``safety``: content checking options."""

    checkContent: bool | None = None
    mode: str | None = None


class VideoInferenceTask(_Wire):
    """A Runware ``videoInference`` task object, every documented option typed."""

    taskType: str | None = None
    taskUUID: str | None = None
    model: str | None = None
    positivePrompt: str | None = None
    negativePrompt: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: int | None = None
    CFGScale: float | None = None
    seed: int | None = None
    numberResults: int | None = None
    inputs: WireInputs | None = None
    # legacy top-level inputs (old official SDKs)
    frameImages: list[Any] | None = None
    referenceImages: list[str] | None = None
    providerSettings: WireProviderSettings | None = None
    outputType: str | None = None
    outputFormat: str | None = None
    outputQuality: int | None = None
    ttl: int | None = None
    deliveryMethod: str | None = None
    webhookURL: str | None = None
    uploadEndpoint: str | None = None
    includeCost: bool | None = None
    safety: WireSafety | None = None


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_short = short_repr


def _code_for(path: str, prefix: str = "invalid") -> str:
    """``inputs.frameImages`` -> ``invalidFrameImages``; ``CFGScale`` -> ``invalidCFGScale``."""
    last = next((p for p in reversed(path.split(".")) if p and not p.isdigit()), "")
    return prefix + (last[:1].upper() + last[1:] if last else "Request")


def _wire_error(
    exc: PydanticValidationError, prefix: str = "", code: str | None = None
) -> ValidationError:
    """The one conversion of a pydantic error into a ValidationError naming the parameter.

    The dotted path follows the Runware docs' notation: array indices are left out of
    ``parameter`` (``inputs.frameImages.frame``) and named in the message instead.
    """
    first = exc.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if prefix:
        loc = [*prefix.split("."), *loc]
    parameter = ".".join(p for p in loc if not p.isdigit())
    indices = [p for p in loc if p.isdigit()]
    where = f" (item {', '.join(indices)})" if indices else ""
    kind = first["type"]
    if kind == "missing":
        return ValidationError(
            code or _code_for(parameter, "missing"),
            f"{parameter}{where} is required",
            parameter=parameter,
        )
    expected = _TYPE_NAMES.get(kind, "a valid value")
    value = first.get("input")
    return ValidationError(
        code or _code_for(parameter),
        f"{parameter}{where} must be {expected}, got {_json_type(value)} {_short(value)}",
        parameter=parameter,
    )


def _extras(model: BaseModel | None, prefix: str) -> list[str]:
    """Dotted paths of the keys ``model`` did not declare (nulls count as absent)."""
    if model is None or not model.model_extra:
        return []
    return [f"{prefix}{key}" for key, value in model.model_extra.items() if value is not None]


def _parse_frame_images(items: list[Any], path: str) -> tuple[list[FrameImageInput], list[str]]:
    """Frame items in either form -> FrameImageInput; also returns unknown item keys."""
    frames: list[FrameImageInput] = []
    unsupported: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            frames.append(FrameImageInput(image=item))
            continue
        if not isinstance(item, dict):
            raise ValidationError(
                "invalidFrameImages",
                f"{path} item {index} must be an image string or an object with image and frame,"
                f" got {_json_type(item)} {_short(item)}",
                parameter=path,
            )
        try:
            wire = WireFrameImage.model_validate(item)
        except PydanticValidationError as exc:
            raise _wire_error(exc, f"{path}.{index}", "invalidFrameImages") from None
        if wire.image is not None and wire.inputImage is not None:
            raise ValidationError(
                "invalidFrameImages",
                f"{path} item {index} gives both image and inputImage; send one of them",
                parameter=f"{path}.image",
            )
        image = wire.image if wire.image is not None else wire.inputImage
        if image is None:
            raise ValidationError(
                "missingFrameImage",
                f"{path} item {index} has no image (send image, or inputImage in the legacy shape)",
                parameter=f"{path}.image",
            )
        frame = wire.frame
        if frame is not None and (isinstance(frame, bool) or not isinstance(frame, str | int)):
            raise ValidationError(
                "invalidFrame",
                f"{path}.frame (item {index}) must be one of 'first', 'last', 0, -1,"
                f" got {_json_type(frame)} {_short(frame)}",
                parameter=f"{path}.frame",
                allowed_values=["first", "last", 0, -1],
            )
        frames.append(FrameImageInput(image=image, frame=frame))
        unsupported += _extras(wire, f"{path}.")
    return frames, unsupported


def check_task_uuid(value: Any, *, uuid_required: bool = True) -> str:
    """The one taskUUID check of the Runware dialect.

    ``videoInference`` needs a UUID (it becomes the job's id on the wire). Tasks that only name
    a task (``getResponse``, ``getTaskDetails``) or echo the client's id (``imageUpload``,
    ``mediaStorage``) take any non-empty string (``uuid_required=False``): an id that is not
    ours is then ``taskNotFound``, as the Runware API answers.
    """
    if not uuid_required:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(
                "missingTaskUUID" if value is None else "invalidTaskUUID",
                f"taskUUID must be a non-empty string (a UUID v4), got {value!r}",
                parameter="taskUUID",
            )
        return value
    if value is None:
        raise ValidationError(
            "missingTaskUUID", "taskUUID is required (a UUID v4)", parameter="taskUUID"
        )
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise ValidationError(
            "invalidTaskUUID",
            f"taskUUID must be a UUID (v4, e.g. 3f1c...-...), got {_short(value)}",
            parameter="taskUUID",
        ) from None
    return str(value)


def parse_video_inference(task: dict[str, Any]) -> TaskRequest:
    """Parse one Runware ``videoInference`` task object into a :class:`TaskRequest`.

    Checks JSON types and shape only; call :func:`reelserve.catalog.validate.validate` next.

    Raises:
        ValidationError: a wrong JSON type (code ``invalid<Param>``, ``parameter`` the dotted
            path), a missing/invalid ``taskUUID``, a non-``videoInference`` ``taskType``, or
            both the current and the legacy shape used for the same input.
    """
    if not isinstance(task, dict):
        raise ValidationError(
            "invalidTask", f"a task must be a JSON object, got {_json_type(task)}", parameter=None
        )
    try:
        wire = VideoInferenceTask.model_validate(task)
    except PydanticValidationError as exc:
        raise _wire_error(exc) from None
    if wire.taskType is not None and wire.taskType != TASK_TYPE:
        raise ValidationError(
            "unsupportedTaskType",
            f"taskType must be {TASK_TYPE!r} here, got {_short(wire.taskType)}",
            parameter="taskType",
            allowed_values=[TASK_TYPE],
        )
    task_uuid = check_task_uuid(wire.taskUUID)

    unsupported = _extras(wire, "")
    inputs = wire.inputs
    unsupported += _extras(inputs, "inputs.")

    # Current shape first; the legacy top-level spelling is accepted when the current one is absent.
    if inputs is not None and inputs.frameImages is not None and wire.frameImages is not None:
        raise ValidationError(
            "invalidFrameImages",
            "frame images were sent both as inputs.frameImages and as top-level frameImages;"
            " send them once (inputs.frameImages is the current shape)",
            parameter="frameImages",
        )
    if (
        inputs is not None
        and inputs.referenceImages is not None
        and wire.referenceImages is not None
    ):
        raise ValidationError(
            "invalidReferenceImages",
            "reference images were sent both as inputs.referenceImages and as top-level"
            " referenceImages; send them once (inputs.referenceImages is the current shape)",
            parameter="referenceImages",
        )
    frames: list[FrameImageInput] = []
    if inputs is not None and inputs.frameImages is not None:
        frames, extra = _parse_frame_images(inputs.frameImages, "inputs.frameImages")
        unsupported += extra
    elif wire.frameImages is not None:
        frames, extra = _parse_frame_images(wire.frameImages, "frameImages")
        unsupported += extra
    reference_images = (
        inputs.referenceImages
        if inputs is not None and inputs.referenceImages is not None
        else wire.referenceImages
    ) or []

    provider = wire.providerSettings
    unsupported += _extras(provider, "providerSettings.")
    kling = provider.klingai if provider is not None else None
    unsupported += _extras(kling, "providerSettings.klingai.")
    safety = wire.safety
    unsupported += _extras(safety, "safety.")

    return TaskRequest(
        task_uuid=task_uuid,
        model=wire.model,
        positive_prompt=wire.positivePrompt,
        negative_prompt=wire.negativePrompt,
        width=wire.width,
        height=wire.height,
        duration=wire.duration,
        fps=wire.fps,
        cfg_scale=wire.CFGScale,
        seed=wire.seed,
        number_results=wire.numberResults,
        frame_images=frames,
        reference_images=list(reference_images),
        reference_videos=list(inputs.referenceVideos or []) if inputs is not None else [],
        video=inputs.video if inputs is not None else None,
        sound=kling.sound if kling is not None else None,
        keep_original_sound=kling.keepOriginalSound if kling is not None else None,
        camera_control=dict(kling.cameraControl)
        if kling and kling.cameraControl is not None
        else None,
        output_type=wire.outputType,
        output_format=wire.outputFormat,
        output_quality=wire.outputQuality,
        ttl=wire.ttl,
        delivery_method=wire.deliveryMethod,
        webhook_url=wire.webhookURL,
        upload_endpoint=wire.uploadEndpoint,
        include_cost=bool(wire.includeCost),
        safety_check_content=safety.checkContent if safety is not None else None,
        safety_mode=safety.mode if safety is not None else None,
        unsupported=unsupported,
    )


# ================================================================================================
# Rendering: Job -> wire items (appended below by the REST/WS work)
# ================================================================================================
