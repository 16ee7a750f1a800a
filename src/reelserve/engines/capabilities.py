"""What each engine honours, as plain data: read by the API at submit, published by workers.

Every model id x workflow is rendered by exactly one engine on an install: the diffusers engine
when a profile maps it (``REELSERVE_PROFILES``), else the preview engine, else nothing when
``REELSERVE_PREVIEW_FALLBACK=false``. :func:`capability` answers, for one route, which engine that
is (with pipeline kind and weights for a profile) and which optional parameters it honours:

* ``sound`` (generated audio): only the ``ltx2`` kind (LTX-2 makes audio with the video);
* ``keepOriginalSound``: engines that carry an input video's audio into the output (preview and
  the diffusers kinds that edit an input video, for the workflows that take one);
* ``cameraControl``: the preview engine moves its virtual camera on every axis and preset; a
  diffusers profile honours exactly the moves its ``camera`` table maps to LoRAs, by axis and
  sign (``zoom_in``, ``pan_up`` ...), so an axis without a LoRA is known before the job runs;
* ``referenceImages`` and edit (``v2v``): where the route's workflow takes them.

This module imports no torch, diffusers or av (the profile file is TOML checked by pydantic), so
the API process can call it. :meth:`Capability.to_dict` is JSON-serialisable for workers to publish
with their heartbeat, and :meth:`Capability.from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reelserve.engines.diffusers.profiles import (
    CAMERA_AXIS_KEYS,
    CAMERA_PRESET_KEYS,
    PIPELINE_WORKFLOWS,
    ProfileSet,
    camera_key,
)
from reelserve.errors import EngineError, ErrorKind
from reelserve.tasks import Workflow

if TYPE_CHECKING:
    from reelserve.settings import Settings
    from reelserve.tasks import CameraControl, GenerationSpec

__all__ = [
    "ENGINE_ABILITIES",
    "Capability",
    "EngineAbilities",
    "capabilities",
    "capability",
    "load_profiles",
]

SOUND_PARAMETER = "providerSettings.klingai.sound"
KEEP_SOUND_PARAMETER = "providerSettings.klingai.keepOriginalSound"
CAMERA_PARAMETER = "providerSettings.klingai.cameraControl"

#: Workflows whose inputs can carry sound that ``keepOriginalSound`` keeps.
_SOUND_INPUT_WORKFLOWS = frozenset({Workflow.V2V, Workflow.R2V})


@dataclass(frozen=True)
class EngineAbilities:
    """What one engine kind (``preview`` or a diffusers pipeline kind) can do at all.

    Attributes:
        workflows: the workflows it renders.
        sound: generates audio with the video.
        keep_original_sound: workflows in which it carries the input's audio into the output.
        camera: ``builtin`` (moves of its own, every axis and preset), ``lora`` (the moves a
            profile maps to camera LoRAs) or ``none``.
    """

    workflows: frozenset[Workflow]
    sound: bool = False
    keep_original_sound: frozenset[Workflow] = frozenset()
    camera: Literal["builtin", "lora", "none"] = "lora"


def _diffusers(kind: str, *, sound: bool = False) -> EngineAbilities:
    flows = PIPELINE_WORKFLOWS[kind]
    return EngineAbilities(
        workflows=flows, sound=sound, keep_original_sound=flows & _SOUND_INPUT_WORKFLOWS
    )


#: The declared abilities of every engine kind (the engines honour exactly these).
ENGINE_ABILITIES: dict[str, EngineAbilities] = {
    "preview": EngineAbilities(
        workflows=frozenset(Workflow),
        keep_original_sound=_SOUND_INPUT_WORKFLOWS,
        camera="builtin",
    ),
    **{kind: _diffusers(kind, sound=kind == "ltx2") for kind in PIPELINE_WORKFLOWS},
}


@dataclass(frozen=True)
class Capability:
    """Which engine renders one model id x workflow on this install and what it honours.

    Attributes:
        model: the AIR id (``klingai:1@1``).
        workflow: ``t2v`` ... ``v2v``.
        engine: ``preview`` or ``diffusers``.
        pipeline: the diffusers pipeline kind (None for preview).
        weights: the profile's weights folder (None for preview).
        repo: the profile's hub repo id, if given.
        sound: honours ``sound: true``.
        keep_original_sound: honours ``keepOriginalSound: true``.
        reference_images: takes reference images (r2v).
        edit: edits an input video (v2v).
        camera_moves: simple-camera moves honoured, as ``<axis>_<direction>`` keys
            (``CAMERA_AXIS_KEYS``), sorted.
        camera_presets: camera presets honoured, sorted.
    """

    model: str
    workflow: str
    engine: Literal["preview", "diffusers"]
    pipeline: str | None = None
    weights: str | None = None
    repo: str | None = None
    sound: bool = False
    keep_original_sound: bool = False
    reference_images: bool = False
    edit: bool = False
    camera_moves: list[str] = field(default_factory=list)
    camera_presets: list[str] = field(default_factory=list)

    @property
    def camera_axes(self) -> list[str]:
        """Axes with at least one direction honoured (``zoom`` when ``zoom_in`` is)."""
        return sorted({CAMERA_AXIS_KEYS[m][0] for m in self.camera_moves})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (plain str/bool/list values)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capability:
        """Read back :meth:`to_dict` (e.g. what a worker published)."""
        return cls(**data)

    def camera_problem(self, camera: CameraControl) -> str | None:
        """Why ``camera`` cannot be honoured here, or None when it can."""
        if camera.type != "simple":
            if camera.type in self.camera_presets:
                return None
            return (
                f"camera preset {camera.type!r} is not available on {self._where()}; "
                f"presets here: {self.camera_presets or 'none'}"
            )
        for axis, value in camera.config.items():
            if not value:
                continue
            key = camera_key(axis, value)
            if key not in self.camera_moves:
                return (
                    f"camera move {axis}={value:g} ({key}) is not available on {self._where()}; "
                    f"moves here: {self.camera_moves or 'none'}"
                )
        return None

    def check(self, spec: GenerationSpec) -> None:
        """Refuse what ``spec`` asks that this route cannot honour.

        Raises:
            EngineError: kind INVALID, code ``unsupportedSound``, ``unsupportedKeepOriginalSound``
                or ``unsupportedCameraControl``, naming the parameter and what is possible here.
        """
        if spec.sound and not self.sound:
            raise EngineError(
                "unsupportedSound",
                f"{SOUND_PARAMETER}=true asks for generated audio, which {self._where()} cannot "
                "make; send sound=false, or map this model to an audio model (pipeline 'ltx2')",
                parameter=SOUND_PARAMETER,
                allowed_values=[False],
                kind=ErrorKind.INVALID,
            )
        if spec.keep_original_sound and not self.keep_original_sound:
            raise EngineError(
                "unsupportedKeepOriginalSound",
                f"{KEEP_SOUND_PARAMETER}=true cannot be honoured by {self._where()}; "
                "send keepOriginalSound=false",
                parameter=KEEP_SOUND_PARAMETER,
                allowed_values=[False],
                kind=ErrorKind.INVALID,
            )
        if spec.camera is not None:
            problem = self.camera_problem(spec.camera)
            if problem is not None:
                raise EngineError(
                    "unsupportedCameraControl",
                    problem,
                    parameter=CAMERA_PARAMETER,
                    allowed_values=self.camera_moves + self.camera_presets,
                    kind=ErrorKind.INVALID,
                )

    def _where(self) -> str:
        if self.engine == "preview":
            return f"the preview engine ({self.model} {self.workflow})"
        return f"pipeline {self.pipeline!r} serving {self.model} {self.workflow}"


def load_profiles(settings: Settings) -> ProfileSet | None:
    """The install's profiles without checking weights (the API host may hold none)."""
    if settings.profiles is None:
        return None
    return ProfileSet.load(Path(settings.profiles), check_weights=False)


def capability(
    settings: Settings,
    model: str,
    workflow: Workflow | str,
    *,
    profiles: ProfileSet | None = None,
) -> Capability | None:
    """The engine that renders ``model`` x ``workflow`` here and what it honours.

    Args:
        settings: the install's settings (``profiles``, ``preview_fallback``).
        model: AIR id.
        workflow: the request's workflow.
        profiles: the already loaded profiles (default: read ``settings.profiles``).

    Returns:
        None when nothing renders it: no profile and the preview fallback off.
    """
    wf = Workflow(workflow)
    if profiles is None:
        profiles = load_profiles(settings)
    entry = profiles.get(model, wf) if profiles is not None else None
    if entry is not None:
        profile = entry.profile
        abilities = ENGINE_ABILITIES[profile.pipeline]
        moves = sorted(k for k in profile.camera if k in CAMERA_AXIS_KEYS)
        presets = sorted(k for k in profile.camera if k in CAMERA_PRESET_KEYS)
        return Capability(
            model=model,
            workflow=wf.value,
            engine="diffusers",
            pipeline=profile.pipeline,
            weights=str(profile.weights),
            repo=profile.repo,
            sound=abilities.sound,
            keep_original_sound=wf in abilities.keep_original_sound,
            reference_images=wf is Workflow.R2V,
            edit=wf is Workflow.V2V,
            camera_moves=moves if abilities.camera == "lora" else [],
            camera_presets=presets if abilities.camera == "lora" else [],
        )
    if not settings.preview_fallback:
        return None
    preview = ENGINE_ABILITIES["preview"]
    return Capability(
        model=model,
        workflow=wf.value,
        engine="preview",
        sound=preview.sound,
        keep_original_sound=wf in preview.keep_original_sound,
        reference_images=wf is Workflow.R2V,
        edit=wf is Workflow.V2V,
        camera_moves=sorted(CAMERA_AXIS_KEYS),
        camera_presets=sorted(CAMERA_PRESET_KEYS),
    )


def capabilities(settings: Settings, *, profiles: ProfileSet | None = None) -> list[dict[str, Any]]:
    """Every catalog model id x workflow that renders here, as JSON-ready dicts.

    Routes nothing renders (preview fallback off, no profile) are left out; what a worker
    publishes is this list.
    """
    from reelserve.catalog import get_catalog

    if profiles is None:
        profiles = load_profiles(settings)
    out: list[dict[str, Any]] = []
    for air, entry in get_catalog().models.items():
        for wf in entry.workflows:
            cap = capability(settings, air, wf, profiles=profiles)
            if cap is not None:
                out.append(cap.to_dict())
    return out
