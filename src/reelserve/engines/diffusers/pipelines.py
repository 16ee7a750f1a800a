"""The pipeline kinds: how each is built from a weights folder and how each is called.

Every kind is a thin adapter over a stock diffusers pipeline. The engine decides sizes, frame
counts, guidance and seeds (:class:`CallPlan`); this module only translates a plan into the keyword
arguments of the right pipeline and returns its frames. The denoising loop is never copied:
progress and cancellation come in through ``callback_on_step_end``.

Kinds and what they take:

==============  =====================================  =========================================
kind            diffusers class                        inputs
==============  =====================================  =========================================
wan-t2v         WanPipeline                            prompt
wan-i2v         WanImageToVideoPipeline (+CLIP vision) first frame
wan-flf2v       WanImageToVideoPipeline (+CLIP vision) first (+ last) frame
wan22-i2v       WanImageToVideoPipeline, two experts   first (+ last) frame
wan22-ti2v      WanPipeline / WanImageToVideoPipeline  prompt, or first frame (expand_timesteps)
wan-vace        WanVACEPipeline                        references, first/last frames, input video
ltx-condition   LTXConditionPipeline                   frames at any index, input video
ltx2            LTX2Pipeline / LTX2ImageToVideoPipeline prompt, first frame, or first + last
                / LTX2ConditionPipeline                frame; makes audio with the video
==============  =====================================  =========================================

``run`` returns a :class:`PipelineOutput`: the frames and, for ``ltx2``, the generated audio as
float32 ``(batch, channels, samples)`` numpy with its sample rate.

torch and diffusers are imported inside the functions, never at module import.
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelserve.engines.diffusers.profiles import Profile
from reelserve.errors import EngineError, ErrorKind
from reelserve.tasks import Workflow

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: The main diffusers class of each kind (the one ``from_pretrained`` loads the folder with).
PIPELINE_CLASSES: dict[str, str] = {
    "wan-t2v": "WanPipeline",
    "wan-i2v": "WanImageToVideoPipeline",
    "wan-flf2v": "WanImageToVideoPipeline",
    "wan22-i2v": "WanImageToVideoPipeline",
    "wan22-ti2v": "WanPipeline",
    "wan-vace": "WanVACEPipeline",
    "ltx-condition": "LTXConditionPipeline",
    "ltx2": "LTX2Pipeline",
}

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


@dataclass
class LoadedPipeline:
    """A built pipeline and its twins sharing the same modules: for wan22-ti2v and ltx2 an
    image-to-video front end (``image_pipe``), for ltx2 also a keyframe one (``condition_pipe``)."""

    kind: str
    pipe: Any
    device: str
    dtype: Any
    image_pipe: Any = None
    condition_pipe: Any = None
    #: Held around a call whose per-request adapter state (camera LoRAs) must not change midway.
    call_lock: threading.Lock = field(default_factory=threading.Lock)

    def modules(self) -> list[Any]:
        """The torch modules of the pipeline (each counted once)."""
        import torch

        seen: dict[int, Any] = {}
        for value in self.pipe.components.values():
            if isinstance(value, torch.nn.Module):
                seen[id(value)] = value
        return list(seen.values())


@dataclass
class CallPlan:
    """Everything one pipeline call needs, already sized by the engine.

    Images are RGB PIL images fitted (cover-crop + resize) to ``width`` x ``height``; ``video`` is
    the input video's frames at the generation rate, fitted likewise; ``conditions`` pins images
    to frame indices (``ltx-condition``).
    """

    workflow: Workflow
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    fps: int
    steps: int
    guidance: float
    guidance_2: float | None
    generators: list[torch.Generator]
    first: Image.Image | None = None
    last: Image.Image | None = None
    reference_images: list[Image.Image] = field(default_factory=list)
    video: list[Image.Image] | None = None
    edit_strength: float = 0.7


@dataclass
class PipelineOutput:
    """What one call produced: ``frames`` as ``(batch, frames, H, W, 3)`` floats in 0-1, and for
    kinds that make sound, ``audio`` as float32 ``(batch, channels, samples)`` at ``sample_rate``."""

    frames: np.ndarray
    audio: np.ndarray | None = None
    sample_rate: int | None = None


def default_device() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(profile: Profile, device: str) -> torch.dtype:
    """The profile's dtype, with ``auto`` meaning bf16 on CUDA and float32 elsewhere.

    Half precision on the CPU is slow and numerically fragile in these models, hence float32 there.
    """
    import torch

    if profile.dtype != "auto":
        return getattr(torch, profile.dtype)
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_pipeline(profile: Profile, device: str) -> LoadedPipeline:
    """Build the pipeline of ``profile`` from its local diffusers folder onto ``device``.

    The Wan VAE (and the CLIP image encoder of wan-i2v) stay in float32 whatever the transformer's
    dtype: the Wan authors and diffusers both recommend it, bf16 decoding visibly bands colours,
    and they are a small share of the weights.
    """
    import diffusers
    import torch

    dtype = resolve_dtype(profile, device)
    cls = getattr(diffusers, PIPELINE_CLASSES[profile.pipeline])
    weights = Path(profile.weights)
    extra: dict[str, Any] = {}
    if profile.pipeline.startswith("wan") and dtype != torch.float32:
        extra["vae"] = diffusers.AutoencoderKLWan.from_pretrained(
            weights, subfolder="vae", torch_dtype=torch.float32
        )
    if profile.pipeline in ("wan-i2v", "wan-flf2v") and dtype != torch.float32:
        import transformers

        extra["image_encoder"] = transformers.CLIPVisionModel.from_pretrained(
            weights, subfolder="image_encoder", torch_dtype=torch.float32
        )
    try:
        pipe = cls.from_pretrained(weights, torch_dtype=dtype, **extra)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EngineError(
            "modelLoadFailed",
            f"cannot load {profile.pipeline!r} weights from {weights}: {exc}",
            parameter="profiles",
            kind=ErrorKind.UNAVAILABLE,
        ) from exc
    _check_components(profile, pipe, weights)
    if profile.flow_shift is not None:
        config = dict(pipe.scheduler.config)
        key = "flow_shift" if "flow_shift" in config else "shift"
        pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: profile.flow_shift})
    if profile.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif profile.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if profile.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    loaded = LoadedPipeline(profile.pipeline, pipe, device, dtype)
    if profile.pipeline == "wan22-ti2v":
        # Same modules, second front end: TI2V-5B does image-to-video through the i2v pipeline
        # with expand_timesteps (the first frame is pinned in latent space, no image encoder).
        twin = diffusers.WanImageToVideoPipeline
        names = set(inspect.signature(twin.__init__).parameters) - {"self"}
        parts = {k: v for k, v in pipe.components.items() if k in names}
        parts["expand_timesteps"] = True
        loaded.image_pipe = twin(**parts)
        loaded.image_pipe.set_progress_bar_config(disable=True)
    elif profile.pipeline == "ltx2":
        # One folder, three front ends over the same modules: text (LTX2Pipeline), first frame
        # (LTX2ImageToVideoPipeline) and keyframes at any index (LTX2ConditionPipeline).
        loaded.image_pipe = _twin(diffusers.LTX2ImageToVideoPipeline, pipe)
        loaded.condition_pipe = _twin(diffusers.LTX2ConditionPipeline, pipe)
    return loaded


def _twin(cls: Any, pipe: Any) -> Any:
    """A second pipeline class over ``pipe``'s modules (nothing is copied or reloaded)."""
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    twin = cls(**{k: v for k, v in pipe.components.items() if k in names})
    twin.set_progress_bar_config(disable=True)
    return twin


def _check_components(profile: Profile, pipe: Any, weights: Path) -> None:
    """Refuse a folder whose components do not fit the kind (e.g. a T2V folder as wan-i2v)."""
    problems: list[str] = []
    kind = profile.pipeline
    transformer = getattr(pipe, "transformer", None)
    if kind in ("wan-i2v", "wan-flf2v") and getattr(pipe, "image_encoder", None) is None:
        problems.append("it has no image_encoder (Wan 2.1 I2V/FLF2V folders ship a CLIP vision model)")
    if kind == "wan22-i2v" and (
        getattr(pipe, "transformer_2", None) is None or pipe.config.get("boundary_ratio") is None
    ):
        problems.append("it lacks transformer_2/boundary_ratio (the Wan 2.2 A14B two-expert layout)")
    if kind == "wan22-ti2v" and not pipe.config.get("expand_timesteps", False):
        problems.append("expand_timesteps is off (not a Wan 2.2 TI2V-5B folder)")
    if (
        kind in ("wan-i2v", "wan-flf2v", "wan22-i2v")
        and transformer is not None
        and transformer.config.in_channels == transformer.config.out_channels
    ):
        problems.append("its transformer takes no image condition channels (a text-to-video checkpoint?)")
    if problems:
        raise EngineError(
            "invalidProfile",
            f"weights folder {weights} does not fit pipeline {kind!r}: " + "; ".join(problems),
            parameter="profiles",
            kind=ErrorKind.UNAVAILABLE,
        )


def pipeline_bytes(loaded: LoadedPipeline) -> int:
    """Bytes of parameters and buffers held by the pipeline's modules."""
    total = 0
    for module in loaded.modules():
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total


def release_pipeline(loaded: LoadedPipeline) -> None:
    """Drop a pipeline's memory now (called by the residency cache on eviction)."""
    import torch

    loaded.pipe = None
    loaded.image_pipe = None
    loaded.condition_pipe = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(loaded: LoadedPipeline, plan: CallPlan, on_step: StepCallback) -> PipelineOutput:
    """Call the pipeline for ``plan``; return its frames (and audio, for ``ltx2``)."""
    kind = loaded.kind
    pipe = loaded.pipe
    generator: Any = plan.generators if len(plan.generators) > 1 else plan.generators[0]
    common: dict[str, Any] = {
        "prompt": plan.prompt,
        "negative_prompt": plan.negative_prompt,
        "height": plan.height,
        "width": plan.width,
        "num_frames": plan.num_frames,
        "num_inference_steps": plan.steps,
        "guidance_scale": plan.guidance,
        "generator": generator,
        "num_videos_per_prompt": len(plan.generators),
        "output_type": "np",
        "callback_on_step_end": on_step,
    }
    wf = plan.workflow
    if kind == "wan-t2v":
        kwargs = common
    elif kind in ("wan-i2v", "wan-flf2v", "wan22-i2v"):
        kwargs = {**common, "image": _need(plan.first, kind, wf, "first frame")}
        if plan.last is not None:
            kwargs["last_image"] = plan.last
    elif kind == "wan22-ti2v":
        if wf is Workflow.I2V:
            pipe = loaded.image_pipe
            kwargs = {**common, "image": _need(plan.first, kind, wf, "first frame")}
        else:
            kwargs = common
    elif kind == "wan-vace":
        kwargs = {**common, **_vace_inputs(plan)}
    elif kind == "ltx-condition":
        kwargs = {**common, **_ltx_inputs(plan)}
        kwargs["frame_rate"] = plan.fps
    elif kind == "ltx2":
        pipe, kwargs = _ltx2_call(loaded, plan, common)
    else:  # pragma: no cover - profiles only admit the kinds above
        raise EngineError("invalidProfile", f"unknown pipeline kind {kind!r}", kind=ErrorKind.INTERNAL)
    if plan.guidance_2 is not None and pipe.config.get("boundary_ratio") is not None:
        # Wan 2.2 A14B folders (T2V, I2V, VACE alike) carry two experts; the low-noise one has
        # its own guidance.
        kwargs["guidance_scale_2"] = plan.guidance_2
    output = pipe(**kwargs)
    if kind != "ltx2":
        return PipelineOutput(output.frames)
    # out.audio stays a torch tensor (batch, channels, samples) whatever output_type says, in the
    # pipeline's dtype (bf16 on GPUs): numpy float32 for the encoder.
    audio = output.audio.detach().float().cpu().numpy()
    return PipelineOutput(output.frames, audio, int(pipe.vocoder.config.output_sampling_rate))


def _ltx2_call(
    loaded: LoadedPipeline, plan: CallPlan, common: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The LTX-2 front end and arguments for ``plan``.

    t2v: ``LTX2Pipeline``; i2v: ``LTX2ImageToVideoPipeline`` (its default ``image_crf``
    re-compresses the first frame as the model was trained on); flf2v: ``LTX2ConditionPipeline``
    with the first frame at index 0 and the last at the final frame. ``frame_rate`` is the
    generation rate: LTX-2 conditions its positions and its audio length on it.
    """
    kwargs = {**common, "frame_rate": float(plan.fps)}
    wf = plan.workflow
    if wf is Workflow.I2V:
        kwargs["image"] = _need(plan.first, "ltx2", wf, "first frame")
        return loaded.image_pipe, kwargs
    if wf is Workflow.FLF2V:
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        first = _need(plan.first, "ltx2", wf, "first frame")
        conditions = [LTX2VideoCondition(frames=first, index=0)]
        if plan.last is not None:
            conditions.append(LTX2VideoCondition(frames=plan.last, index=plan.num_frames - 1))
        kwargs["conditions"] = conditions
        return loaded.condition_pipe, kwargs
    return loaded.pipe, kwargs


def _need(image: Image.Image | None, kind: str, wf: Workflow, what: str) -> Image.Image:
    if image is None:
        raise EngineError(
            "missingFrameImage",
            f"pipeline {kind!r} needs a {what} for workflow {wf.value!r}, none was given",
            parameter="inputs.frameImages",
        )
    return image


def _vace_inputs(plan: CallPlan) -> dict[str, Any]:
    """VACE conditioning: a control video plus a mask (white = generate, black = keep).

    First/last frames become kept frames in an otherwise grey control video; an input video becomes
    the control video with everything to generate (VACE's repaint-with-structure editing);
    references go in ``reference_images``. Text-only leaves video and mask to the pipeline's
    defaults (all generated).
    """
    from PIL import Image

    out: dict[str, Any] = {}
    size = (plan.width, plan.height)
    if plan.video is not None:
        frames = list(plan.video)
        out["video"] = frames
        out["mask"] = [Image.new("L", size, 255)] * len(frames)
    elif plan.first is not None or plan.last is not None:
        grey = Image.new("RGB", size, (127, 127, 127))
        keep = Image.new("L", size, 0)
        make = Image.new("L", size, 255)
        video = [grey] * plan.num_frames
        mask = [make] * plan.num_frames
        if plan.first is not None:
            video[0], mask[0] = plan.first, keep
        if plan.last is not None:
            video[-1], mask[-1] = plan.last, keep
        out["video"], out["mask"] = video, mask
    if plan.reference_images:
        out["reference_images"] = list(plan.reference_images)
    return out


def _ltx_inputs(plan: CallPlan) -> dict[str, Any]:
    """LTX conditions: images pinned at frame indices, or the input video as a whole."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    conditions: list[Any] = []
    out: dict[str, Any] = {}
    if plan.video is not None:
        conditions.append(LTXVideoCondition(video=list(plan.video), frame_index=0, strength=1.0))
        # Editing: start from the input video's latents partly noised, so the prompt can change it.
        out["denoise_strength"] = plan.edit_strength
    if plan.first is not None:
        conditions.append(LTXVideoCondition(image=plan.first, frame_index=0))
    if plan.last is not None:
        conditions.append(LTXVideoCondition(image=plan.last, frame_index=plan.num_frames - 1))
    if conditions:
        out["conditions"] = conditions
    return out
