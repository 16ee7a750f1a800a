"""Typed model of ``models.toml``: every key declared, unknown keys refused, the data cross-checked.

The catalog is read once per process (:func:`load_catalog` is cached by
:func:`reelserve.catalog.get_catalog`). A broken file fails loudly at load time with a
:class:`reelserve.errors.ReelserveError` (code ``invalidCatalog``) rather than mid-request.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from reelserve.errors import ErrorKind, ReelserveError, ValidationError
from reelserve.tasks import FramePosition, Workflow

PROVIDER_SETTINGS = ("sound", "keepOriginalSound", "cameraControl")
"""Every ``providerSettings.klingai`` key reelserve understands (models enable a subset)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageLimits(_Strict):
    """Limits on input images (per side in pixels, file size in bytes)."""

    min_side: int = Field(gt=0)
    max_side: int = Field(gt=0)
    max_bytes: int = Field(gt=0)


class VideoLimits(ImageLimits):
    """Limits on input videos (same shape as image limits)."""


class PromptLimits(_Strict):
    """Character limits shared by positivePrompt and negativePrompt."""

    min_length: int = Field(ge=0)
    max_length: int = Field(gt=0)


class CfgLimits(_Strict):
    """CFGScale range, step and default."""

    min: float
    max: float
    step: float = Field(gt=0)
    default: float


class IntRange(_Strict):
    """An inclusive integer range."""

    min: int
    max: int


class QualityLimits(IntRange):
    """outputQuality range and default."""

    default: int


class Limits(_Strict):
    """Request limits shared by every model."""

    images: ImageLimits
    videos: VideoLimits
    prompt: PromptLimits
    cfg_scale: CfgLimits
    number_results: IntRange
    output_quality: QualityLimits
    ttl: IntRange
    seed: IntRange


class CameraRules(_Strict):
    """Kling camera control: types, axes of the ``simple`` type and the axis value range."""

    types: list[str]
    axes: list[str]
    min: float
    max: float


class InferSize(_Strict):
    """Output size derived from the first frame (klingai:6@0).

    Rule: keep the image's aspect ratio, scale so the short side is ``short_side``; if the long
    side then exceeds ``max_long_side`` scale down to that instead; round both sides down to even
    numbers (H.264 4:2:0 needs them even).
    """

    short_side: int = Field(gt=0)
    max_long_side: int = Field(gt=0)


class References(_Strict):
    """How many reference inputs the r2v workflow takes."""

    max_images: int = Field(ge=0)
    max_videos: int = Field(ge=0)


class VideoEdit(_Strict):
    """v2v rules: accepted input video length (seconds) and reference images alongside."""

    min_duration: float = Field(gt=0)
    max_duration: float = Field(gt=0)
    max_reference_images: int = Field(ge=0)


class Price(_Strict):
    """Price of one result in USD.

    ``unit="clip"``: ``base`` per result whatever its duration. ``unit="second"``: ``base`` per
    second of output; ``reference_video`` replaces it when reference videos are given and
    ``video_edit`` for v2v (billed on the input video's length, which the output follows).
    """

    unit: Literal["clip", "second"]
    base: float = Field(gt=0)
    reference_video: float | None = Field(default=None, gt=0)
    video_edit: float | None = Field(default=None, gt=0)


def _parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT")
    return int(width), int(height)


class ModelEntry(_Strict):
    """One AIR id of the catalog."""

    air: str = ""  # filled from the table key by Catalog
    name: str
    version: str
    tier: str
    workflows: list[Workflow] = Field(min_length=1)
    sizes: list[str]
    infer_size: InferSize | None = None
    fps: dict[Workflow, int]
    durations: dict[Workflow, list[float]]
    prompt_required: list[Workflow]  # default: ["t2v"] when the model has t2v
    provider_settings: list[str] = Field(default_factory=list)
    references: References | None = None
    video_edit: VideoEdit | None = None
    price: Price

    @model_validator(mode="before")
    @classmethod
    def _expand_per_workflow(cls, data: Any) -> Any:
        # A plain fps / durations value applies to every workflow of the model; v2v has no
        # duration of its own (it follows the input video), so it gets none.
        if not isinstance(data, dict):
            return data
        data = dict(data)
        workflows = data.get("workflows", [])
        if not isinstance(workflows, list):
            return data
        data.setdefault("prompt_required", [wf for wf in workflows if wf == "t2v"])
        if not isinstance(data.get("fps"), dict):
            data["fps"] = {wf: data.get("fps") for wf in workflows}
        if not isinstance(data.get("durations"), dict):
            data["durations"] = {wf: data.get("durations") for wf in workflows if wf != "v2v"}
        return data

    @field_validator("sizes")
    @classmethod
    def _check_sizes(cls, sizes: list[str]) -> list[str]:
        for size in sizes:
            width, height = _parse_size(size)
            if width % 2 or height % 2 or width <= 0 or height <= 0:
                raise ValueError(f"size {size!r} must have positive even sides")
        return sizes

    @model_validator(mode="after")
    def _cross_check(self) -> ModelEntry:
        workflows = set(self.workflows)
        if set(self.fps) != workflows:
            raise ValueError(f"fps must name exactly the workflows {sorted(workflows)}")
        if set(self.durations) != workflows - {Workflow.V2V}:
            raise ValueError("durations must name every workflow except v2v")
        for wf, values in self.durations.items():
            if not values or any(v <= 0 for v in values) or sorted(values) != values:
                raise ValueError(f"durations for {wf} must be positive and ascending")
        if any(f <= 0 for f in self.fps.values()):
            raise ValueError("fps must be positive")
        if Workflow.FLF2V in workflows and Workflow.I2V not in workflows:
            raise ValueError("flf2v needs i2v (a first frame alone must work too)")
        if bool(self.sizes) == (self.infer_size is not None):
            raise ValueError("give either sizes or infer_size, exactly one")
        if (Workflow.R2V in workflows) != (self.references is not None):
            raise ValueError("references is required with r2v and only with it")
        if (Workflow.V2V in workflows) != (self.video_edit is not None):
            raise ValueError("video_edit is required with v2v and only with it")
        if self.video_edit and self.video_edit.min_duration > self.video_edit.max_duration:
            raise ValueError("video_edit.min_duration > max_duration")
        if not set(self.prompt_required) <= workflows:
            raise ValueError("prompt_required names a workflow the model lacks")
        unknown = set(self.provider_settings) - set(PROVIDER_SETTINGS)
        if unknown:
            raise ValueError(f"unknown provider settings {sorted(unknown)}")
        if self.price.unit == "clip" and (self.price.reference_video or self.price.video_edit):
            raise ValueError("per-clip prices take no reference_video/video_edit surcharge")
        return self

    # -- derived facts ----------------------------------------------------------------------

    @property
    def frame_positions(self) -> list[FramePosition]:
        """Frame positions ``inputs.frameImages`` may pin on this model."""
        if Workflow.FLF2V in self.workflows:
            return [FramePosition.FIRST, FramePosition.LAST]
        if Workflow.I2V in self.workflows:
            return [FramePosition.FIRST]
        return []

    @property
    def size_list(self) -> list[tuple[int, int]]:
        """Allowed output sizes as ``(width, height)``, first one the default."""
        return [_parse_size(s) for s in self.sizes]

    @property
    def default_size(self) -> tuple[int, int] | None:
        """The first listed size, or ``None`` when the size is inferred from an input."""
        sizes = self.size_list
        return sizes[0] if sizes else None

    def supports(self, workflow: Workflow) -> bool:
        """Whether the model offers ``workflow``."""
        return workflow in self.workflows


class Catalog(_Strict):
    """The whole catalog: shared limits, camera rules and the models by AIR id."""

    limits: Limits
    camera: CameraRules
    models: dict[str, ModelEntry]

    @model_validator(mode="before")
    @classmethod
    def _fill_air(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            data = dict(data)
            data["models"] = {
                air: {**entry, "air": air} if isinstance(entry, dict) else entry
                for air, entry in data["models"].items()
            }
        return data

    @model_validator(mode="after")
    def _cross_check(self) -> Catalog:
        lim = self.limits
        if lim.images.min_side > lim.images.max_side or lim.videos.min_side > lim.videos.max_side:
            raise ValueError("limits: min_side > max_side")
        if not lim.cfg_scale.min <= lim.cfg_scale.default <= lim.cfg_scale.max:
            raise ValueError("limits.cfg_scale.default outside min..max")
        if not lim.output_quality.min <= lim.output_quality.default <= lim.output_quality.max:
            raise ValueError("limits.output_quality.default outside min..max")
        if "simple" not in self.camera.types:
            raise ValueError("camera.types must include simple")
        for air, model in self.models.items():
            for width, height in model.size_list:
                if max(width, height) > lim.images.max_side * 2:
                    raise ValueError(f"{air}: size {width}x{height} is implausibly large")
        return self

    def model(self, air: str) -> ModelEntry:
        """The entry for ``air``; raises ``modelNotFound`` (kind NOT_FOUND) when unknown."""
        entry = self.models.get(air)
        if entry is None:
            raise ValidationError(
                "modelNotFound",
                f"model {air!r} is not in the catalog; available models: {', '.join(self.models)}",
                parameter="model",
                allowed_values=list(self.models),
                kind=ErrorKind.NOT_FOUND,
            )
        return entry


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and check a catalog file (default: the packaged ``models.toml``).

    Raises:
        ReelserveError: ``invalidCatalog`` (kind INTERNAL) naming the broken key.
    """
    try:
        if path is None:
            text = resources.files("reelserve.catalog").joinpath("models.toml").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
        data = tomllib.loads(text)
        return Catalog.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReelserveError(
            "invalidCatalog", f"cannot read the model catalog: {exc}", kind=ErrorKind.INTERNAL
        ) from exc
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ReelserveError(
            "invalidCatalog",
            f"model catalog key {where or '(root)'}: {first['msg']}",
            kind=ErrorKind.INTERNAL,
        ) from exc
