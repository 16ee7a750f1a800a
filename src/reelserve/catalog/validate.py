"""The one semantic validator: :class:`TaskRequest` -> :class:`GenerationSpec` or a precise error.

Every rule of the catalog (``models.toml``) is enforced here and nowhere else. Each refusal is a
:class:`reelserve.errors.ValidationError` whose ``code`` keeps the Runware prefixes
(``invalid*``, ``missing*``, ``unsupported*``, ``*NotFound``), whose ``parameter`` is the Runware
dotted path (array indices left out, as in the Runware docs: ``inputs.frameImages.frame``) and
whose ``allowedValues`` lists the finite set of allowed values where there is one.

Rules are checked in a fixed order (unknown parameters, model, inputs and workflow, prompts,
numbers, size, duration, provider settings, delivery) so one request always gets the same error.

:func:`resolve_media` completes a spec whose size/duration depend on decoded inputs (the first
frame for ``klingai:6@0``, the input video for v2v); the worker calls it after decoding.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from reelserve.catalog import get_catalog
from reelserve.catalog.spec import Catalog, ModelEntry
from reelserve.errors import EngineError, ErrorKind, MediaError, invalid
from reelserve.tasks import (
    CameraControl,
    Delivery,
    DeliveryMethod,
    FrameImage,
    FrameImageInput,
    FramePosition,
    GenerationSpec,
    OutputFormat,
    OutputType,
    Safety,
    TaskRequest,
    Workflow,
)

SAFETY_MODES = ("none", "fast", "full")

# Seconds an input video may overshoot/undershoot the edit limits and still be accepted (it is
# snapped to the limit): containers often report 10.01 s for a 10 s clip.
VIDEO_DURATION_TOLERANCE = 0.1


def _num(value: float) -> int | float:
    """5.0 -> 5 for messages and allowedValues."""
    return int(value) if float(value).is_integer() else value


def _nums(values: Sequence[float]) -> list[int | float]:
    return [_num(v) for v in values]


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, safe for any JSON value (even a 10**5000 int)."""
    try:
        text = repr(value)
    except ValueError:  # int too large for str() conversion
        return "<a very large integer>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


_short = short_repr


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------
# frame images and workflow
# ------------------------------------------------------------------------------------------------

_FRAME_VALUES: dict[str | int, FramePosition] = {
    "first": FramePosition.FIRST,
    "last": FramePosition.LAST,
    0: FramePosition.FIRST,
    -1: FramePosition.LAST,
}


def _frame_positions(items: list[FrameImageInput]) -> list[FrameImage]:
    """Apply the Runware distribution rules: 1 image = first, 2 = first and last."""
    param = "inputs.frameImages"
    if len(items) > 2:
        raise invalid(
            "invalidFrameImages",
            f"{param} takes at most 2 images (first and last frame), got {len(items)}",
            param,
        )
    explicit: list[FramePosition | None] = []
    for index, item in enumerate(items):
        if not item.image or not item.image.strip():
            raise invalid(
                "invalidFrameImages", f"{param} item {index} has an empty image", f"{param}.image"
            )
        if item.frame is None:
            explicit.append(None)
            continue
        position = _FRAME_VALUES.get(item.frame) if not isinstance(item.frame, bool) else None
        if position is None:
            raise invalid(
                "invalidFrame",
                f"{param}.frame of item {index} is {_short(item.frame)}; allowed: 'first', 'last',"
                " 0 (first frame), -1 (last frame)",
                f"{param}.frame",
                ["first", "last", 0, -1],
            )
        explicit.append(position)
    given = [p for p in explicit if p is not None]
    if len(given) != len(set(given)):
        raise invalid(
            "invalidFrame",
            f"{param} pins two images to the same frame ({given[0].value}); give one first and"
            " at most one last frame",
            f"{param}.frame",
            ["first", "last", 0, -1],
        )
    # Omitted positions take what is left, in order: first, then last.
    free = [p for p in (FramePosition.FIRST, FramePosition.LAST) if p not in given]
    positions = [p if p is not None else free.pop(0) for p in explicit]
    frames = [FrameImage(image=i.image, position=p) for i, p in zip(items, positions, strict=True)]
    if frames and FramePosition.FIRST not in positions:
        raise invalid(
            "invalidFrameImages",
            f"{param} has a last frame but no first frame; a generation starts from a first frame",
            param,
        )
    return frames


def _workflow(model: ModelEntry, req: TaskRequest, frames: list[FrameImage]) -> Workflow:
    """Pick the workflow from the inputs given, refusing combinations that mean two at once."""
    air = model.air
    families = [
        name
        for name, present in (
            ("inputs.frameImages", bool(frames)),
            ("inputs.referenceImages", bool(req.reference_images)),
            ("inputs.referenceVideos", bool(req.reference_videos)),
            ("inputs.video", req.video is not None),
        )
        if present
    ]
    # Reference images accompany an edit, and reference images/videos go together in r2v;
    # anything else mixed is two workflows at once.
    allowed_mixes = (
        {"inputs.video", "inputs.referenceImages"},
        {"inputs.referenceImages", "inputs.referenceVideos"},
    )
    if len(families) > 1 and set(families) not in allowed_mixes:
        raise invalid(
            "unsupportedInputCombination",
            f"{' and '.join(families)} cannot be combined: give exactly one of inputs.frameImages,"
            " inputs.referenceImages/referenceVideos or inputs.video (reference images may"
            " accompany inputs.video)",
            families[1],
        )
    if req.video is not None:
        workflow = Workflow.V2V
        param = "inputs.video"
    elif req.reference_images or req.reference_videos:
        workflow = Workflow.R2V
        param = "inputs.referenceImages" if req.reference_images else "inputs.referenceVideos"
    elif frames:
        last = any(f.position is FramePosition.LAST for f in frames)
        workflow = Workflow.FLF2V if last else Workflow.I2V
        param = "inputs.frameImages"
    else:
        workflow = Workflow.T2V
        param = "inputs.frameImages"

    if workflow is Workflow.FLF2V and not model.supports(Workflow.FLF2V):
        positions = [p.value for p in model.frame_positions]
        raise invalid(
            "unsupportedFramePosition",
            f"{air} supports only a first frame image; a last frame was given"
            f" ({'a second image becomes the last frame' if len(frames) == 2 else 'frame last/-1'})."
            " Models with first and last frame: "
            + ", ".join(m for m, e in get_catalog().models.items() if e.supports(Workflow.FLF2V)),
            "inputs.frameImages.frame",
            positions,
        )
    if not model.supports(workflow):
        offered = ", ".join(w.value for w in model.workflows)
        if workflow is Workflow.T2V:
            message = (
                f"{air} cannot generate from text alone (it offers {offered}); give a first frame"
                " in inputs.frameImages"
            )
        else:
            message = f"{air} does not offer {workflow.value} (it offers {offered}); remove {param}"
        raise invalid("unsupportedWorkflow", message, param, [w.value for w in model.workflows])
    return workflow


def _check_images(values: list[str], param: str) -> None:
    for index, value in enumerate(values):
        if not value.strip():
            raise invalid(
                f"invalid{param.rsplit('.', 1)[-1][:1].upper()}{param.rsplit('.', 1)[-1][1:]}",
                f"{param} item {index} is empty; give a UUID, URL, data URI or base64 data",
                param,
            )


def _check_references(model: ModelEntry, workflow: Workflow, req: TaskRequest) -> None:
    air = model.air
    _check_images(req.reference_images, "inputs.referenceImages")
    _check_images(req.reference_videos, "inputs.referenceVideos")
    if req.video is not None and not req.video.strip():
        raise invalid("invalidVideo", "inputs.video is empty; give a UUID or URL", "inputs.video")
    if workflow is Workflow.R2V and model.references is not None:
        refs = model.references
        if len(req.reference_images) > refs.max_images:
            raise invalid(
                "invalidReferenceImages",
                f"inputs.referenceImages takes at most {refs.max_images} images on {air},"
                f" got {len(req.reference_images)}",
                "inputs.referenceImages",
            )
        if len(req.reference_videos) > refs.max_videos:
            raise invalid(
                "invalidReferenceVideos",
                f"inputs.referenceVideos takes at most {refs.max_videos} video(s) on {air},"
                f" got {len(req.reference_videos)}",
                "inputs.referenceVideos",
            )
    if workflow is Workflow.V2V and model.video_edit is not None:
        limit = model.video_edit.max_reference_images
        if len(req.reference_images) > limit:
            raise invalid(
                "invalidReferenceImages",
                f"with inputs.video, inputs.referenceImages takes at most {limit} images on {air},"
                f" got {len(req.reference_images)}",
                "inputs.referenceImages",
            )


# ------------------------------------------------------------------------------------------------
# scalar rules
# ------------------------------------------------------------------------------------------------


def _check_prompt(
    value: str | None, *, param: str, required: bool, catalog: Catalog, why: str
) -> str | None:
    limits = catalog.limits.prompt
    cap = param[:1].upper() + param[1:]
    if value is None:
        if required:
            raise invalid(f"missing{cap}", f"{param} is required {why}", param)
        return None
    if len(value) < limits.min_length or len(value) > limits.max_length:
        raise invalid(
            f"invalid{cap}",
            f"{param} must be {limits.min_length}-{limits.max_length} characters long,"
            f" got {len(value)}",
            param,
        )
    if not value.strip():
        raise invalid(f"invalid{cap}", f"{param} must not be only whitespace", param)
    return value


def _check_cfg(value: float | None, catalog: Catalog) -> float:
    lim = catalog.limits.cfg_scale
    if value is None:
        return lim.default
    steps = value / lim.step if math.isfinite(value) else math.nan
    if not (math.isfinite(value) and lim.min <= value <= lim.max):
        raise invalid(
            "invalidCFGScale",
            f"CFGScale must be between {_num(lim.min)} and {_num(lim.max)}, got {_short(value)}",
            "CFGScale",
        )
    if abs(steps - round(steps)) > 1e-6:
        raise invalid(
            "invalidCFGScale",
            f"CFGScale must be a multiple of {lim.step} (e.g. 0.5 or 0.51), got {value!r}",
            "CFGScale",
        )
    return round(round(steps) * lim.step, 6)


def _check_int_range(value: int, lo: int, hi: int, param: str, code: str, finite: bool) -> int:
    if not lo <= value <= hi:
        raise invalid(
            code,
            f"{param} must be between {lo} and {hi}, got {_short(value)}",
            param,
            list(range(lo, hi + 1)) if finite else None,
        )
    return value


def _seeds(req: TaskRequest, count: int, catalog: Catalog) -> list[int]:
    lim = catalog.limits.seed
    if req.seed is None:
        # Runware shows seeds in the 31-bit range; keep random ones there too.
        first = secrets.randbelow(2**31 - 1) + 1
    else:
        first = _check_int_range(req.seed, lim.min, lim.max, "seed", "invalidSeed", False)
    # Later results get seed+1, seed+2, ... so one seed reproduces the whole batch.
    span = lim.max - lim.min + 1
    return [lim.min + (first - lim.min + i) % span for i in range(count)]


def _size(model: ModelEntry, workflow: Workflow, req: TaskRequest) -> tuple[int | None, int | None]:
    air = model.air
    if req.width is None and req.height is None:
        if workflow is Workflow.V2V or model.infer_size is not None:
            return None, None
        default = model.default_size
        assert default is not None  # cross-checked: sizes or infer_size
        return default
    if workflow is Workflow.V2V or model.infer_size is not None:
        source = "the input video" if workflow is Workflow.V2V else "the first frame image"
        param = "width" if req.width is not None else "height"
        raise invalid(
            "unsupportedDimensions",
            f"{air} takes its output size from {source} ({workflow.value}); do not send width or"
            f" height (got {param}={_short(req.width if param == 'width' else req.height)})",
            param,
        )
    if req.width is None or req.height is None:
        given, missing = ("width", "height") if req.width is not None else ("height", "width")
        raise invalid(
            "invalidDimensions",
            f"{given} was given without {missing}; width and height must be used together",
            missing,
            model.sizes,
        )
    if (req.width, req.height) not in model.size_list:
        raise invalid(
            "invalidDimensions",
            f"{req.width}x{req.height} is not a size of {air}; allowed: {', '.join(model.sizes)}",
            "width",
            model.sizes,
        )
    return req.width, req.height


def _duration(model: ModelEntry, workflow: Workflow, req: TaskRequest) -> float | None:
    if workflow is Workflow.V2V:
        if req.duration is not None:
            raise invalid(
                "unsupportedDuration",
                f"{model.air} takes the duration of the input video when editing (inputs.video);"
                f" do not send duration (got {_short(req.duration)})",
                "duration",
            )
        return None
    allowed = model.durations[workflow]
    if req.duration is None:
        # 5 s is the documented default; a model without 5 s would use its shortest.
        return 5.0 if 5.0 in allowed else allowed[0]
    if not math.isfinite(req.duration) or req.duration not in allowed:
        raise invalid(
            "invalidDuration",
            f"duration {_short(req.duration)} is not allowed for {model.air} {workflow.value};"
            f" allowed: {', '.join(str(d) for d in _nums(allowed))} seconds",
            "duration",
            _nums(allowed),
        )
    return float(req.duration)


def _camera(
    model: ModelEntry, raw: dict[str, Any] | None, catalog: Catalog
) -> CameraControl | None:
    param = "providerSettings.klingai.cameraControl"
    if raw is None:
        return None
    rules = catalog.camera
    unknown = sorted(set(raw) - {"type", "config"})
    if unknown:
        raise invalid(
            "unsupportedParameter",
            f"{param} has unknown key(s) {', '.join(unknown)}; allowed: type, config",
            f"{param}.{unknown[0]}",
        )
    kind = raw.get("type")
    if kind not in rules.types:
        raise invalid(
            "invalidCameraControl",
            f"{param}.type is {_short(kind)}; allowed: {', '.join(rules.types)}",
            f"{param}.type",
            rules.types,
        )
    config = raw.get("config")
    if kind != "simple":
        if config:
            raise invalid(
                "invalidCameraControl",
                f"{param}.type {kind!r} is a preset movement and takes no config; send config"
                " only with type 'simple'",
                f"{param}.config",
            )
        return CameraControl(type=kind)
    if not isinstance(config, dict):
        raise invalid(
            "invalidCameraControl",
            f"{param}.config must be an object with exactly one non-zero axis of"
            f" {', '.join(rules.axes)} for type 'simple', got {_short(config)}",
            f"{param}.config",
        )
    axes: dict[str, float] = {}
    for axis, value in config.items():
        if axis not in rules.axes:
            raise invalid(
                "invalidCameraControl",
                f"{param}.config has unknown axis {_short(axis)}; allowed: {', '.join(rules.axes)}",
                f"{param}.config",
                rules.axes,
            )
        if value is None:
            continue
        if not _is_number(value) or not (math.isfinite(value) and rules.min <= value <= rules.max):
            raise invalid(
                "invalidCameraControl",
                f"{param}.config.{axis} must be a number from {_num(rules.min)} to"
                f" {_num(rules.max)}, got {_short(value)}",
                f"{param}.config.{axis}",
            )
        if value != 0:
            axes[axis] = float(value)
    if len(axes) != 1:
        raise invalid(
            "invalidCameraControl",
            f"{param} of type 'simple' needs exactly one non-zero axis, got {len(axes)}"
            f" ({', '.join(axes) or 'all zero'})",
            f"{param}.config",
            rules.axes,
        )
    return CameraControl(type="simple", config=axes)


def _provider(
    model: ModelEntry, workflow: Workflow, req: TaskRequest, catalog: Catalog
) -> tuple[bool, bool, CameraControl | None]:
    air = model.air
    given = {
        "sound": req.sound is not None,
        "keepOriginalSound": req.keep_original_sound is not None,
        "cameraControl": req.camera_control is not None,
    }
    for key, present in given.items():
        if present and key not in model.provider_settings:
            allowed = ", ".join(model.provider_settings) or "none"
            raise invalid(
                "unsupportedParameter",
                f"providerSettings.klingai.{key} is not supported by {air}"
                f" (its provider settings: {allowed})",
                f"providerSettings.klingai.{key}",
                model.provider_settings,
            )
    keep = bool(req.keep_original_sound)
    if keep and not (req.video is not None or req.reference_videos):
        raise invalid(
            "invalidKeepOriginalSound",
            "providerSettings.klingai.keepOriginalSound keeps the sound of inputs.video or"
            " inputs.referenceVideos; neither was given",
            "providerSettings.klingai.keepOriginalSound",
        )
    return bool(req.sound), keep, _camera(model, req.camera_control, catalog)


def _choice(value: str | None, enum_values: Sequence[str], param: str, code: str) -> str | None:
    """Case-insensitive match against a finite set; returns the canonical spelling."""
    if value is None:
        return None
    for candidate in enum_values:
        if value.lower() == candidate.lower():
            return candidate
    raise invalid(
        code,
        f"{param} is {_short(value)}; allowed: {', '.join(enum_values)}",
        param,
        list(enum_values),
    )


def _check_url(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise invalid(
            f"invalid{param[:1].upper()}{param[1:]}",
            f"{param} must be an absolute http(s) URL, got {_short(value)}",
            param,
        )
    return value


def _delivery(req: TaskRequest, catalog: Catalog) -> dict[str, Any]:
    out: dict[str, Any] = {}
    output_type = _choice(
        req.output_type, [t.value for t in OutputType], "outputType", "invalidOutputType"
    )
    out["output_type"] = OutputType(output_type) if output_type else OutputType.URL
    output_format = _choice(
        req.output_format, [f.value for f in OutputFormat], "outputFormat", "invalidOutputFormat"
    )
    out["output_format"] = OutputFormat(output_format) if output_format else OutputFormat.MP4
    q = catalog.limits.output_quality
    out["output_quality"] = (
        q.default
        if req.output_quality is None
        else _check_int_range(
            req.output_quality, q.min, q.max, "outputQuality", "invalidOutputQuality", False
        )
    )
    t = catalog.limits.ttl
    out["ttl"] = (
        None
        if req.ttl is None
        else _check_int_range(req.ttl, t.min, t.max, "ttl", "invalidTtl", False)
    )
    method = _choice(
        req.delivery_method,
        [m.value for m in DeliveryMethod],
        "deliveryMethod",
        "invalidDeliveryMethod",
    )
    out["delivery"] = Delivery(
        method=DeliveryMethod(method) if method else DeliveryMethod.ASYNC,
        webhook_url=_check_url(req.webhook_url, "webhookURL"),
        upload_endpoint=_check_url(req.upload_endpoint, "uploadEndpoint"),
        include_cost=req.include_cost,
    )
    mode = _choice(req.safety_mode, SAFETY_MODES, "safety.mode", "invalidSafetyMode")
    # Checking runs when asked for by checkContent or by a mode other than none; checkContent
    # alone means "fast" (as documented).
    check = bool(req.safety_check_content) or mode in ("fast", "full")
    if not check:
        mode = "none"
    elif mode in (None, "none"):
        mode = "fast"
    out["safety"] = Safety(check_content=check, mode=mode)
    return out


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------


def validate(request: TaskRequest, *, catalog: Catalog | None = None) -> GenerationSpec:
    """Check ``request`` against the catalog and return the normalized spec.

    Size stays ``None`` for ``klingai:6@0`` (inferred from the first frame) and size and duration
    stay ``None`` for v2v (they follow the input video); :func:`resolve_media` fills them.

    Raises:
        reelserve.errors.ValidationError: the first broken rule (``modelNotFound`` has kind
            NOT_FOUND, everything else kind INVALID).
    """
    catalog = catalog or get_catalog()
    if request.unsupported:
        paths = request.unsupported
        raise invalid(
            "unsupportedParameter",
            f"unknown parameter {paths[0]}"
            + (f" (also: {', '.join(paths[1:6])})" if len(paths) > 1 else "")
            + "; see docs/compatibility.md for the parameters reelserve accepts",
            paths[0],
        )
    if request.model is None or not request.model.strip():
        raise invalid(
            "missingModel",
            "model is required; give an AIR id such as klingai:1@1",
            "model",
            list(catalog.models),
        )
    model = catalog.model(request.model)

    frames = _frame_positions(request.frame_images)
    workflow = _workflow(model, request, frames)
    _check_references(model, workflow, request)

    required = workflow in model.prompt_required
    why = (
        f"for {model.air}"
        if set(model.prompt_required) >= set(model.workflows)
        else "for text-to-video (no inputs.frameImages given)"
    )
    positive = _check_prompt(
        request.positive_prompt, param="positivePrompt", required=required, catalog=catalog, why=why
    )
    negative = _check_prompt(
        request.negative_prompt, param="negativePrompt", required=False, catalog=catalog, why=""
    )
    cfg = _check_cfg(request.cfg_scale, catalog)
    nr = catalog.limits.number_results
    count = (
        nr.min
        if request.number_results is None
        else _check_int_range(
            request.number_results, nr.min, nr.max, "numberResults", "invalidNumberResults", True
        )
    )
    seeds = _seeds(request, count, catalog)
    width, height = _size(model, workflow, request)
    duration = _duration(model, workflow, request)
    fps = model.fps[workflow]
    if request.fps is not None and request.fps != fps:
        raise invalid(
            "invalidFps",
            f"fps {_short(request.fps)} is not available on {model.air} {workflow.value};"
            f" it renders at {fps} fps",
            "fps",
            [fps],
        )
    sound, keep, camera = _provider(model, workflow, request, catalog)
    delivery = _delivery(request, catalog)

    return GenerationSpec(
        task_uuid=request.task_uuid,
        model=model.air,
        workflow=workflow,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        positive_prompt=positive,
        negative_prompt=negative,
        cfg_scale=cfg,
        seeds=seeds,
        frame_images=frames,
        reference_images=list(request.reference_images),
        reference_videos=list(request.reference_videos),
        input_video=request.video,
        camera=camera,
        sound=sound,
        keep_original_sound=keep,
        **delivery,
    )


def infer_size_from_image(model: ModelEntry, width: int, height: int) -> tuple[int, int]:
    """Output size for a model that infers it from the first frame (``klingai:6@0``).

    Keep the image's aspect ratio; scale so the short side is ``infer_size.short_side`` (720),
    unless the long side would then exceed ``infer_size.max_long_side`` (1920), in which case the
    long side is set to that; round both sides down to even numbers (at least 2).
    """
    rule = model.infer_size
    if rule is None:
        raise ValueError(f"{model.air} does not infer its size")
    short, long_ = min(width, height), max(width, height)
    scale = rule.short_side / short
    if long_ * scale > rule.max_long_side:
        scale = rule.max_long_side / long_
    out_w = max(2, int(width * scale + 1e-9) // 2 * 2)
    out_h = max(2, int(height * scale + 1e-9) // 2 * 2)
    return out_w, out_h


def _video_size(catalog: Catalog, air: str, width: int, height: int) -> tuple[int, int]:
    lim = catalog.limits.videos
    if width <= 0 or height <= 0 or min(width, height) < lim.min_side:
        raise MediaError(
            "invalidVideoDimensions",
            f"inputs.video is {width}x{height}; {air} needs each side at least {lim.min_side} px",
            parameter="inputs.video",
        )
    # The output follows the input; an oversized input is scaled down (never refused) to fit.
    scale = min(1.0, lim.max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def resolve_media(
    spec: GenerationSpec,
    *,
    first_frame_size: tuple[int, int] | None = None,
    input_video: tuple[int, int, float] | None = None,
    catalog: Catalog | None = None,
) -> GenerationSpec:
    """Fill the size/duration a spec leaves to its inputs, once they are decoded.

    * ``klingai:6@0`` (size inferred): from ``first_frame_size`` = ``(width, height)`` of the
      first frame, by :func:`infer_size_from_image`.
    * v2v: from ``input_video`` = ``(width, height, duration_seconds)``. The output keeps the
      input's size (sides rounded down to even numbers, scaled down to fit
      ``limits.videos.max_side``; a side under ``limits.videos.min_side`` is refused) and its
      duration, which must lie within the model's ``video_edit`` range (O1: 3-10 s). Inputs within
      0.1 s outside the range are snapped to it; anything further out is refused, never trimmed,
      because the edit is billed on the input's length.

    A spec that is already resolved is returned unchanged.

    Raises:
        reelserve.errors.MediaError: ``invalidVideoDuration`` / ``invalidVideoDimensions``
            (parameter ``inputs.video``).
        reelserve.errors.EngineError: the spec needs an input fact the caller did not pass.
    """
    if spec.is_resolved:
        return spec
    catalog = catalog or get_catalog()
    model = catalog.model(spec.model)
    if spec.workflow is Workflow.V2V:
        if input_video is None:
            raise EngineError(
                "internalError",
                f"task {spec.task_uuid}: v2v needs the input video's size and duration to resolve",
                kind=ErrorKind.INTERNAL,
            )
        width, height, seconds = input_video
        edit = model.video_edit
        assert edit is not None  # cross-checked: v2v models have video_edit
        if not math.isfinite(seconds) or not (
            edit.min_duration - VIDEO_DURATION_TOLERANCE
            <= seconds
            <= edit.max_duration + VIDEO_DURATION_TOLERANCE
        ):
            raise MediaError(
                "invalidVideoDuration",
                f"inputs.video lasts {seconds:.2f} s; {spec.model} edits videos of"
                f" {_num(edit.min_duration)}-{_num(edit.max_duration)} s",
                parameter="inputs.video",
            )
        duration = min(max(seconds, edit.min_duration), edit.max_duration)
        out_w, out_h = _video_size(catalog, spec.model, width, height)
        return spec.resolved(width=out_w, height=out_h, duration=duration)
    if spec.width is None or spec.height is None:
        if first_frame_size is None:
            raise EngineError(
                "internalError",
                f"task {spec.task_uuid}: {spec.model} needs the first frame's size to resolve",
                kind=ErrorKind.INTERNAL,
            )
        out_w, out_h = infer_size_from_image(model, *first_frame_size)
        return spec.resolved(width=out_w, height=out_h)
    return spec


__all__ = ["infer_size_from_image", "resolve_media", "validate"]
