"""Diffusers profiles: which open model renders which Kling model id and workflow.

``REELSERVE_PROFILES`` names a TOML file of this shape::

    [models."klingai:1@1".t2v]
    pipeline = "wan-t2v"                 # a pipeline kind (see PIPELINE_WORKFLOWS)
    weights = "models/wan21-t2v-1.3b"    # local diffusers folder (model_index.json)
    repo = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"   # optional: hub id for `reelserve models pull`
    steps = 30
    guidance = 5.0
    native_size = "832x480"
    native_fps = 16

Relative ``weights`` paths resolve against the profile file's folder, so a profile file and its
models can move together. Loading is pure (TOML + pydantic): it never imports torch, so the server
can validate every profile at start, before any pipeline is built. Everything a job could trip
over later (a missing folder, a pipeline kind that cannot do the mapped workflow, an unknown key, a
native size the pipeline cannot generate) is refused here with a message naming the profile entry.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reelserve.engines.diffusers.options import (
    CacheOption,
    CompileOption,
    LoraOption,
    check_options,
    parse_compile,
)
from reelserve.engines.diffusers.parallel import ParallelOption, check_parallel
from reelserve.errors import EngineError, ErrorKind
from reelserve.tasks import Workflow

PipelineKind = Literal[
    "wan-t2v", "wan-i2v", "wan-flf2v", "wan22-i2v", "wan22-ti2v", "wan-vace", "ltx-condition", "ltx2"
]

#: What each pipeline kind can render. A profile mapping a workflow outside this set is refused.
PIPELINE_WORKFLOWS: dict[str, frozenset[Workflow]] = {
    "wan-t2v": frozenset({Workflow.T2V}),
    "wan-i2v": frozenset({Workflow.I2V}),
    # The FLF2V checkpoint learned positions for exactly two CLIP images: first frame alone fails.
    "wan-flf2v": frozenset({Workflow.FLF2V}),
    "wan22-i2v": frozenset({Workflow.I2V, Workflow.FLF2V}),
    "wan22-ti2v": frozenset({Workflow.T2V, Workflow.I2V}),
    "wan-vace": frozenset(
        {Workflow.T2V, Workflow.I2V, Workflow.FLF2V, Workflow.R2V, Workflow.V2V}
    ),
    "ltx-condition": frozenset({Workflow.T2V, Workflow.I2V, Workflow.FLF2V, Workflow.V2V}),
    # LTX-2 (video with audio): LTX2Pipeline, LTX2ImageToVideoPipeline, LTX2ConditionPipeline.
    "ltx2": frozenset({Workflow.T2V, Workflow.I2V, Workflow.FLF2V}),
}

#: Keys of a profile's ``camera`` table: Kling's camera axes by sign, then the presets. The sign
#: words follow Kling's documented meaning of a positive value (see engines/preview/camera.py): e.g.
#: ``zoom`` +10 widens the field of view (``zoom_out``), -10 narrows it (``zoom_in``).
CAMERA_AXIS_KEYS: dict[str, tuple[str, int]] = {
    "horizontal_right": ("horizontal", 1),
    "horizontal_left": ("horizontal", -1),
    "vertical_up": ("vertical", 1),
    "vertical_down": ("vertical", -1),
    "pan_up": ("pan", 1),
    "pan_down": ("pan", -1),
    "tilt_right": ("tilt", 1),
    "tilt_left": ("tilt", -1),
    "roll_clockwise": ("roll", 1),
    "roll_counterclockwise": ("roll", -1),
    "zoom_out": ("zoom", 1),
    "zoom_in": ("zoom", -1),
}
CAMERA_PRESET_KEYS: tuple[str, ...] = ("down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_KEYS: tuple[str, ...] = (*CAMERA_AXIS_KEYS, *CAMERA_PRESET_KEYS)


def camera_key(axis: str, value: float) -> str:
    """The ``camera`` table key for a simple move: ``camera_key("zoom", -4)`` is ``zoom_in``."""
    sign = 1 if value > 0 else -1
    for key, (name, key_sign) in CAMERA_AXIS_KEYS.items():
        if name == axis and key_sign == sign:
            return key
    raise KeyError(f"unknown camera axis {axis!r}")


@dataclass(frozen=True)
class FrameRule:
    """Generation constraints of a pipeline family: side multiple and ``k*frame_step + 1`` frames."""

    side_multiple: int
    frame_step: int


WAN_RULE = FrameRule(side_multiple=16, frame_step=4)
LTX_RULE = FrameRule(side_multiple=32, frame_step=8)


def frame_rule(pipeline: str) -> FrameRule:
    """The size/frame-count constraint of a pipeline kind."""
    return LTX_RULE if pipeline.startswith("ltx") else WAN_RULE


_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

#: What identifies one loaded pipeline (see :meth:`Profile.resident_key`).
ResidentKey = tuple[str, ...]


class Profile(BaseModel):
    """One ``[models."<AIR id>".<workflow>]`` entry, validated.

    ``guidance`` is the pipeline's classifier-free guidance at the Kling default ``CFGScale`` 0.5;
    see :meth:`guidance_for` for how other ``CFGScale`` values map onto it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: PipelineKind
    weights: Path
    repo: str | None = None
    steps: int = Field(default=30, ge=1, le=1000)
    guidance: float = Field(default=5.0, ge=0.0, le=50.0)
    guidance_2: float | None = Field(
        default=None, ge=0.0, le=50.0, description="low-noise expert guidance (wan22 two-expert)"
    )
    native_size: str = "832x480"
    native_fps: int = Field(default=16, ge=1, le=120)
    max_frames: int | None = Field(
        default=None, ge=1, description="cap on generated frames; longer clips are time-stretched"
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    offload: Literal["none", "model", "sequential"] = "none"
    vae_tiling: bool = False
    flow_shift: float | None = Field(default=None, gt=0.0)
    negative_prompt: str | None = None
    batch: int = Field(default=1, ge=1, le=4, description="seeds rendered together in one call")
    camera: dict[str, str] = Field(
        default_factory=dict,
        description="camera LoRAs by move (CAMERA_KEYS): local file/folder or hub id[/file]",
    )
    edit_strength: float = Field(
        default=0.7, gt=0.0, le=1.0, description="ltx-condition v2v: how much of the input is re-noised"
    )
    # Speed options (engines/diffusers/options.py; docs/diffusers.md, "Speed options").
    attention_backend: str | None = None
    compile: CompileOption = Field(default_factory=lambda: CompileOption(scope="none"))
    cfg_batch: bool = False
    cache: CacheOption | None = None
    quantize: Literal["fp8", "int8"] | None = None
    loras: tuple[LoraOption, ...] = ()
    # Several GPUs for one video (engines/diffusers/parallel.py; worker/group.py).
    parallel: ParallelOption | None = None

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, value: Any) -> CompileOption:
        return parse_compile(value)

    @field_validator("native_size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _SIZE_RE.match(value):
            raise ValueError(f"native_size must look like 832x480, got {value!r}")
        return value

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(CAMERA_KEYS))
        if unknown:
            raise ValueError(f"unknown camera move(s) {unknown}; allowed: {list(CAMERA_KEYS)}")
        return value

    @property
    def native_wh(self) -> tuple[int, int]:
        """``native_size`` as (width, height)."""
        match = _SIZE_RE.match(self.native_size)
        assert match is not None  # checked by the validator
        return int(match.group(1)), int(match.group(2))

    @property
    def rule(self) -> FrameRule:
        """Size/frame constraints of this profile's pipeline."""
        return frame_rule(self.pipeline)

    def guidance_for(self, cfg_scale: float) -> float:
        """Map Kling ``CFGScale`` (0-1, default 0.5) to this pipeline's guidance scale.

        Linear through three points: 0 -> 1.0 (no guidance), 0.5 -> ``guidance`` (the profile's
        recommended value), 1 -> ``2*guidance - 1``. A guidance of 1 or less disables CFG in the
        diffusers pipelines, which halves the work, so CFGScale 0 is also the fast path.
        """
        return max(0.0, 1.0 + (self.guidance - 1.0) * (cfg_scale / 0.5))

    def resident_key(self) -> ResidentKey:
        """What identifies one loaded pipeline: several ids may share the same weights (and the
        same speed options; different options make a different loaded pipeline)."""
        options = self.model_dump_json(
            include={"attention_backend", "compile", "cfg_batch", "cache", "quantize", "loras",
                     "parallel"})
        return (self.pipeline, str(self.weights), self.dtype, self.offload, options)


@dataclass(frozen=True)
class ProfileEntry:
    """A profile with the model id and workflow it serves."""

    model: str
    workflow: Workflow
    profile: Profile

    @property
    def label(self) -> str:
        """How messages name this entry: ``models."klingai:1@1".t2v``."""
        return f'models."{self.model}".{self.workflow.value}'


def _fail(code: str, message: str, parameter: str | None = None, allowed: Any = None) -> EngineError:
    return EngineError(
        code, message, parameter=parameter, allowed_values=allowed, kind=ErrorKind.UNAVAILABLE
    )


class ProfileSet:
    """All profiles of one install, keyed by (model id, workflow)."""

    def __init__(self, entries: list[ProfileEntry], source: Path | None = None) -> None:
        self.source = source
        self._entries = {(e.model, e.workflow): e for e in entries}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ProfileEntry]:
        return iter(self._entries.values())

    def get(self, model: str, workflow: Workflow | str) -> ProfileEntry | None:
        """The entry serving ``model``/``workflow``, or ``None``."""
        return self._entries.get((model, Workflow(workflow)))

    def models(self) -> set[str]:
        """Every model id that has at least one profile."""
        return {model for model, _ in self._entries}

    def models_for(self, resident_key: ResidentKey) -> set[str]:
        """Model ids served by the pipeline with this residency key."""
        return {e.model for e in self if e.profile.resident_key() == resident_key}

    @classmethod
    def load(cls, path: Path, *, check_weights: bool = True) -> ProfileSet:
        """Read and validate a profile file.

        Args:
            path: the TOML file (``REELSERVE_PROFILES``).
            check_weights: refuse entries whose weights folder lacks ``model_index.json``
                (``reelserve models list``/``pull`` pass False to report instead of refusing).

        Raises:
            EngineError: kind UNAVAILABLE, code ``invalidProfile`` or ``modelWeightsNotFound``,
                naming the file, the entry and what is allowed.
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _fail(
                "invalidProfile", f"profiles file {path} (REELSERVE_PROFILES) does not exist", "profiles"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise _fail("invalidProfile", f"profiles file {path} is not valid TOML: {exc}", "profiles") from None
        return cls.from_dict(raw, base_dir=path.parent, source=path, check_weights=check_weights)

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        *,
        base_dir: Path,
        source: Path | None = None,
        check_weights: bool = True,
    ) -> ProfileSet:
        """Validate an already parsed profile document (see :meth:`load`)."""
        where = f"profiles file {source}" if source else "profiles"
        unknown = sorted(set(raw) - {"models"})
        if unknown:
            raise _fail(
                "invalidProfile",
                f"{where}: unknown top-level key(s) {unknown}; allowed: ['models']",
                "profiles",
                ["models"],
            )
        models = raw.get("models", {})
        if not isinstance(models, dict):
            raise _fail("invalidProfile", f"{where}: [models] must be a table of model ids", "profiles")
        workflows = [w.value for w in Workflow]
        entries: list[ProfileEntry] = []
        for model, table in models.items():
            if not isinstance(table, dict):
                raise _fail("invalidProfile", f'{where}: models."{model}" must be a table of workflows', "profiles")
            for wf_name, body in table.items():
                label = f'models."{model}".{wf_name}'
                if wf_name not in workflows:
                    raise _fail(
                        "invalidProfile",
                        f"{where}: {label}: unknown workflow {wf_name!r}; allowed: {workflows}",
                        "profiles",
                        workflows,
                    )
                if not isinstance(body, dict):
                    raise _fail("invalidProfile", f"{where}: {label} must be a table", "profiles")
                try:
                    profile = Profile.model_validate(body)
                except ValidationError as exc:
                    raise _fail("invalidProfile", f"{where}: {label}: {_problems(exc)}", "profiles",
                                _allowed_keys(exc)) from None
                workflow = Workflow(wf_name)
                profile = _resolve_paths(profile, base_dir)
                if profile.camera:
                    profile = profile.model_copy(
                        update={"camera": {k: _lora_source(v, base_dir) for k, v in profile.camera.items()}}
                    )
                entry = ProfileEntry(model, workflow, profile)
                _check_entry(entry, where, check_weights)
                entries.append(entry)
        return cls(entries, source)


def _lora_source(value: str, base_dir: Path) -> str:
    """A LoRA location as given, or resolved against the profile's folder when it names a local
    file or folder there (``loras/dolly-in.safetensors``); hub ids (``owner/name``) pass as-is."""
    local = Path(value).expanduser()
    if not local.is_absolute():
        local = base_dir / local
    return str(local) if local.exists() else value


_KEYS_OF: dict[str, type[BaseModel]] = {"": Profile, "compile": CompileOption, "loras": LoraOption,
                                         "parallel": ParallelOption}


def _model_for(loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose keys apply at an error location (the profile, or one of its tables)."""
    head = str(loc[0]) if len(loc) > 1 else ""
    return _KEYS_OF.get(head, Profile)


def _problems(exc: ValidationError) -> str:
    """Each problem as ``key: what is wrong (got X)``, unknown keys with the keys allowed there."""
    out: list[str] = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = sorted(_model_for(err["loc"]).model_fields)
            out.append(f"unknown key {key!r}; allowed keys: {allowed}")
            continue
        text = f"{key}: {err['msg']}"
        if err["type"] != "missing":
            text += f" (got {err['input']!r})"
        out.append(text)
    return "; ".join(out)


def _allowed_keys(exc: ValidationError) -> list[str] | None:
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            return sorted(_model_for(err["loc"]).model_fields)
    return None


def _resolve_paths(profile: Profile, base_dir: Path) -> Profile:
    """Relative ``weights`` and LoRA paths resolve against the profile file's folder."""
    update: dict[str, Any] = {}
    if not profile.weights.is_absolute():
        update["weights"] = base_dir / profile.weights
    if any(lora.path is not None and not lora.path.is_absolute() for lora in profile.loras):
        update["loras"] = tuple(
            lora.model_copy(update={"path": base_dir / lora.path})
            if lora.path is not None and not lora.path.is_absolute() else lora
            for lora in profile.loras)
    return profile.model_copy(update=update) if update else profile


def _check_entry(entry: ProfileEntry, where: str, check_weights: bool) -> None:
    profile = entry.profile
    check_options(profile, where, entry.label)
    check_parallel(profile, where, entry.label, check_weights=check_weights)
    can = PIPELINE_WORKFLOWS[profile.pipeline]
    if entry.workflow not in can:
        allowed = sorted(w.value for w in can)
        raise _fail(
            "invalidProfile",
            f"{where}: {entry.label}: pipeline {profile.pipeline!r} cannot do workflow "
            f"{entry.workflow.value!r}; it can do {allowed}. Pipelines that can: "
            f"{sorted(k for k, v in PIPELINE_WORKFLOWS.items() if entry.workflow in v)}",
            "profiles",
            allowed,
        )
    rule = profile.rule
    width, height = profile.native_wh
    if width % rule.side_multiple or height % rule.side_multiple:
        raise _fail(
            "invalidProfile",
            f"{where}: {entry.label}: native_size {profile.native_size!r} is not generable by "
            f"{profile.pipeline!r}: both sides must be multiples of {rule.side_multiple}",
            "profiles",
        )
    if profile.max_frames is not None and (profile.max_frames - 1) % rule.frame_step:
        raise _fail(
            "invalidProfile",
            f"{where}: {entry.label}: max_frames {profile.max_frames} must be "
            f"{rule.frame_step}k+1 for {profile.pipeline!r}",
            "profiles",
        )
    if check_weights and not (profile.weights / "model_index.json").is_file():
        hint = (
            f"; download it with `reelserve models pull {profile.weights.name}` ({profile.repo})"
            if profile.repo
            else ""
        )
        raise EngineError(
            "modelWeightsNotFound",
            f"{where}: {entry.label}: weights folder {profile.weights} has no model_index.json "
            f"(expected a diffusers folder saved with save_pretrained){hint}",
            parameter="profiles",
            kind=ErrorKind.UNAVAILABLE,
        )
