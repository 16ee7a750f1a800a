"""DiffusersEngine: renders Kling model ids with open video models through diffusers.

Per job: look up the profile of ``spec.model`` + ``spec.workflow``, take its pipeline from the
residency cache (loading it on first use), plan the call at the profile's native size and rate,
run it with progress and cancellation wired into ``callback_on_step_end``, then hand the encoder a
lazy stream of frames fitted to the requested size and resampled to the contract rate and count.

Size and time fitting (documented in docs/diffusers.md):

* generation size: the profile's native pixel area at the requested aspect ratio, each side rounded
  to the pipeline's multiple (Wan 16, LTX 32) — so a portrait request generates portrait, never a
  squeezed landscape;
* generated frames: ``duration x native_fps`` rounded up to the next ``4k+1`` (Wan) or ``8k+1``
  (LTX), capped at the profile's ``max_frames`` (longer clips are then time-stretched);
* output: every frame is cover-fitted (scale to cover, centre-crop) to exactly ``width x height``,
  and output frame ``i`` shows the generated frame nearest to time ``i / fps`` (nearest, not
  blended: blending two frames ghosts moving edges). Exactly ``spec.num_frames`` frames come out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reelserve.engines.diffusers.profiles import Profile, ProfileEntry, ProfileSet, ResidentKey
from reelserve.engines.diffusers.residency import ResidencyCache
from reelserve.errors import (
    CANCELLED_CODE,
    CancelledError,
    EngineError,
    ErrorKind,
    ReelserveError,
    WorkerBrokenError,
)
from reelserve.media.clip import (
    AudioSource,
    CancelledFn,
    Clip,
    GeneratedAudio,
    ProgressFn,
    ResolvedInputs,
    VideoInput,
)
from reelserve.media.frames import cover_fit, first_frame, iter_video_frames
from reelserve.tasks import GenerationSpec, Workflow

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from reelserve.engines.diffusers.parallel import RenderGroup
    from reelserve.engines.diffusers.pipelines import CallPlan, LoadedPipeline
    from reelserve.settings import Settings

log = logging.getLogger(__name__)

# Share of the progress bar given to denoising; the rest is the VAE decode and fitting.
_DENOISE_SHARE = 0.95


class _Interrupted(Exception):
    """Raised from the step callback to leave the pipeline before its (wasted) VAE decode."""


def generation_size(profile: Profile, width: int, height: int) -> tuple[int, int]:
    """The size to generate at.

    The native size itself (or its transpose for portrait requests) when the requested aspect is
    within 10% of it — the model was trained there, and cover-fitting absorbs the small
    difference; otherwise the native pixel area at the requested aspect, sides on the grid.
    """
    native_w, native_h = profile.native_wh
    for cand_w, cand_h in ((native_w, native_h), (native_h, native_w)):
        if abs(math.log((cand_w / cand_h) / (width / height))) < 0.1:
            return cand_w, cand_h
    area = native_w * native_h
    aspect = width / height
    step = profile.rule.side_multiple
    gen_h = math.sqrt(area / aspect)
    gen_w = gen_h * aspect
    return max(step, round(gen_w / step) * step), max(step, round(gen_h / step) * step)


def generation_frames(profile: Profile, duration: float) -> int:
    """Frames to generate for ``duration`` seconds at the native rate: ``k*step + 1``, capped."""
    step = profile.rule.frame_step
    wanted = max(2, math.ceil(duration * profile.native_fps))
    frames = math.ceil((wanted - 1) / step) * step + 1
    if profile.max_frames is not None:
        frames = min(frames, profile.max_frames)
    return frames


def resample_indices(src_frames: int, src_fps: float, dst_frames: int, dst_fps: float) -> list[int]:
    """For each output frame, the nearest source frame in time (clamped to the source)."""
    if src_frames <= 0:
        raise ValueError("no source frames")
    # When the source was capped (max_frames) it covers less time than asked: stretch it over the
    # whole output instead of freezing on its last frame.
    src_span = (src_frames - 1) / src_fps
    dst_span = (dst_frames - 1) / dst_fps if dst_frames > 1 else 0.0
    stretch = src_span / dst_span if dst_span > src_span and dst_span > 0 else 1.0
    return [
        min(src_frames - 1, max(0, round(i / dst_fps * stretch * src_fps))) for i in range(dst_frames)
    ]


def _read_video(video: VideoInput, fps: float, num_frames: int, width: int, height: int) -> list[Image.Image]:
    """Decode ``video``, resample it to ``num_frames`` at ``fps`` and cover-fit each frame."""
    frames = list(iter_video_frames(video.path))
    if not frames:
        raise EngineError(
            "invalidVideo", f"input video {video.path.name} has no decodable frames", parameter="inputs.video"
        )
    src_fps = len(frames) / video.duration if video.duration > 0 else video.fps
    idx = resample_indices(len(frames), src_fps, num_frames, fps)
    return [cover_fit(frames[i], width, height) for i in idx]


def _first_frame_of(video: VideoInput) -> Image.Image:
    image = first_frame(video.path)
    if image is None:
        raise EngineError(
            "invalidVideo", f"reference video {video.path.name} has no frames", parameter="inputs.referenceVideos"
        )
    return image


class DiffusersEngine:
    """The :class:`~reelserve.engines.base.Engine` backed by diffusers pipelines.

    Args:
        profiles: the validated profiles (see :class:`ProfileSet`).
        settings: install settings (device and memory budget).
    """

    name = "diffusers"

    def __init__(self, profiles: ProfileSet, settings: Settings) -> None:
        self.profiles = profiles
        self.settings = settings
        self._device: str | None = settings.diffusers_device
        budget = settings.diffusers_memory_gb
        self._budget_bytes: int | None = int(budget * 1e9) if budget is not None else None
        self._budget_resolved = budget is not None
        self._cache: ResidencyCache[ResidentKey, LoadedPipeline] | None = None
        self._init_lock = threading.Lock()
        #: The torch.distributed group this engine renders with (set by ``worker/group.py`` in
        #: each rank's process); ``None`` outside a group, where ``parallel`` is ignored.
        self.group: RenderGroup | None = None

    # -- Engine protocol ------------------------------------------------------------------

    def supports(self, spec: GenerationSpec) -> bool:
        """Whether a profile maps ``spec.model`` + ``spec.workflow``."""
        return self.profiles.get(spec.model, spec.workflow) is not None

    def generate(
        self,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seed: int,
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> Clip:
        """Render one result of ``spec`` with ``seed`` (see the module docstring for fitting)."""
        return self.generate_many(spec, inputs, [seed], progress, cancelled)[0]

    def batch_size(self, spec: GenerationSpec) -> int:
        """Seeds of ``spec`` rendered in one pipeline call: the profile's ``batch`` (memory
        permitting, which the operator states there); always 1 for ``wan-vace``, whose
        control-video inputs this engine passes for one sample per call."""
        profile = self._entry(spec).profile
        return 1 if profile.pipeline == "wan-vace" else max(1, profile.batch)

    def generate_many(
        self,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seeds: list[int],
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> list[Clip]:
        """Render one clip per seed; up to the profile's ``batch`` seeds share one pipeline call.

        Batching runs several seeds through the transformer together (one generator each), which
        keeps the GPU busier than back-to-back calls; the profile's ``batch`` says how many fit.
        """
        entry = self._entry(spec)
        if spec.width is None or spec.height is None or spec.duration is None:
            raise EngineError(
                "internalError", "the diffusers engine needs a resolved spec (size and duration)",
                kind=ErrorKind.INTERNAL,
            )
        batch = self.batch_size(spec)
        groups = [seeds[i : i + batch] for i in range(0, len(seeds), batch)]
        clips: list[Clip] = []
        for n, group in enumerate(groups):

            def part(fraction: float, n: int = n) -> None:
                progress((n + fraction) / len(groups))

            clips.extend(self._run(entry, spec, inputs, group, part, cancelled))
        return clips

    # -- residency ------------------------------------------------------------------------

    @property
    def device(self) -> str:
        """The torch device pipelines run on."""
        if self._device is None:
            from reelserve.engines.diffusers.pipelines import default_device

            self._device = default_device()
        return self._device

    @property
    def cache(self) -> ResidencyCache[ResidentKey, LoadedPipeline]:
        """The residency cache (built on first use, when the device is known)."""
        with self._init_lock:
            if self._cache is None:
                from reelserve.engines.diffusers.pipelines import pipeline_bytes, release_pipeline

                if not self._budget_resolved:
                    self._budget_bytes = _default_budget(self.device)
                    self._budget_resolved = True
                self._cache = ResidencyCache(self._budget_bytes, pipeline_bytes, release_pipeline)
            return self._cache

    def loaded_models(self) -> set[str]:
        """Model ids whose pipeline is resident now."""
        if self._cache is None:
            return set()
        out: set[str] = set()
        for key in self._cache.keys():  # noqa: SIM118 - ResidencyCache.keys() is a locked snapshot
            out |= self.profiles.models_for(key)
        return out

    def load(self, model: str, workflow: Workflow | str) -> None:
        """Load (or touch) the pipeline serving ``model``/``workflow`` without running it."""
        entry = self.profiles.get(model, workflow)
        if entry is None:
            raise EngineError("modelUnavailable", f"no profile for {model!r}/{workflow}", kind=ErrorKind.UNAVAILABLE)
        if self._parallel(entry.profile) and self.group is not None and self.group.rank == 0:
            # Loading a split pipeline builds its device mesh: a collective every rank joins.
            self.group.announce(("load", entry.model, entry.workflow.value))
        with self._use(entry.profile):
            pass  # entering loads it into the residency cache (or marks it recently used)

    def preload(self, models: list[str] | set[str] | tuple[str, ...]) -> list[str]:
        """Load (and, with ``compile``, compile and warm up) every pipeline serving ``models``.

        Returns the entries loaded (``model/workflow``). Entries sharing one pipeline load once.

        Raises:
            EngineError: ``modelUnavailable`` for an id no profile maps; any load failure.
        """
        unknown = sorted(set(models) - self.profiles.models())
        if unknown:
            raise EngineError(
                "modelUnavailable", f"--preload {', '.join(unknown)}: no diffusers profile maps "
                f"{'it' if len(unknown) == 1 else 'them'}; profiled ids: {sorted(self.profiles.models())}",
                parameter="preload", allowed_values=sorted(self.profiles.models()),
                kind=ErrorKind.UNAVAILABLE)
        done: list[str] = []
        for entry in self.profiles:
            if entry.model in models:
                self.load(entry.model, entry.workflow)
                done.append(f"{entry.model}/{entry.workflow.value}")
        return done

    def _use(self, profile: Profile) -> Any:
        return self.cache.use(
            profile.resident_key(),
            lambda: self._load(profile),
            estimate=_folder_bytes(profile.weights),
        )

    def _parallel(self, profile: Profile) -> bool:
        """Whether ``profile`` renders split over this engine's group: it asks for ``parallel``
        and the group has exactly as many ranks as its degrees multiply to."""
        return (profile.parallel is not None and self.group is not None
                and self.group.size == profile.parallel.degree)

    def _fit(self, profile: Profile, width: int, height: int, frames: int) -> tuple[int, int]:
        """The generation size, moved a grid step or two when a split pipeline's token sequence
        would not divide by the group size (see :func:`~.parallel.fit_tokens`)."""
        if not self._parallel(profile):
            return width, height
        from reelserve.engines.diffusers.parallel import fit_tokens

        assert profile.parallel is not None
        if profile.parallel.sequence_degree < 2:  # CFG parallel alone keeps the whole sequence
            return width, height
        return fit_tokens(profile.pipeline, width, height, frames,
                          profile.parallel.sequence_degree, profile.rule.side_multiple)

    def serve_peer(self, message: tuple[Any, ...]) -> None:
        """A rank other than 0 runs what rank 0 announced (see :class:`~.parallel.RenderGroup`):
        ``("load", model, workflow)`` or ``("render", model, workflow, spec, inputs, seeds)``.
        The frames it renders are dropped: rank 0 encodes the result."""
        kind, model, workflow = message[0], message[1], Workflow(message[2])
        if kind == "load":
            self.load(model, workflow)
            return
        spec, inputs, seeds = message[3:6]
        entry = self._entry(spec)
        if (entry.model, entry.workflow) != (model, workflow):  # pragma: no cover - same profiles
            raise EngineError("engineFailed", f"rank 0 renders {model}/{workflow.value}, this rank "
                              f"maps it to {entry.label}", kind=ErrorKind.INTERNAL)
        # A CancelledError here means rank 0 was cancelled and every rank left at the same step.
        with contextlib.suppress(CancelledError):
            self._run(entry, spec, inputs, seeds, lambda _fraction: None, lambda: False)

    def adopt(self, profile: Profile, loaded: LoadedPipeline) -> None:
        """Make an already built pipeline resident for ``profile``, as a load would: its speed
        options applied and, when compiled, warmed up. For pipelines that exist only in memory
        (the benchmark builds full-size models from configs with random weights)."""
        # Entering the cache prepares the pipeline and keeps it resident; nothing runs inside.
        with self.cache.use(profile.resident_key(), lambda: self._prepare(loaded, profile)):
            return

    def _load(self, profile: Profile) -> LoadedPipeline:
        """Build a profile's pipeline, apply its speed options, and warm a compiled one up."""
        from reelserve.engines.diffusers.pipelines import load_pipeline

        return self._prepare(load_pipeline(profile, self.device), profile)

    def _prepare(self, loaded: LoadedPipeline, profile: Profile) -> LoadedPipeline:
        from reelserve.engines.diffusers.options import apply_options, lossy_options

        apply_options(loaded, profile)
        if profile.parallel is not None:
            if self._parallel(profile):
                from reelserve.engines.diffusers.parallel import enable_parallel

                # After the options: diffusers checks the attention backend it finds set.
                enable_parallel(loaded, profile.parallel, self.device)
            else:
                log.warning("pipeline %s asks for parallel = %s (a group of %d), but this worker "
                            "is %s: it renders on its one device", profile.pipeline,
                            profile.parallel.model_dump(), profile.parallel.degree,
                            "not a group" if self.group is None
                            else f"a group of {self.group.size}")
        if profile.camera:
            from reelserve.engines.diffusers.camera import load_camera_loras

            # After the static LoRAs, which are fused and unloaded (that would drop these too).
            load_camera_loras(loaded.pipe, profile.camera)
        lossy = lossy_options(profile)
        if lossy:
            log.info("pipeline %s runs with lossy options: %s", profile.pipeline, ", ".join(lossy))
        if profile.compile.enabled:
            self._warm_up(loaded, profile)
        return loaded

    def _warm_up(self, loaded: LoadedPipeline, profile: Profile) -> None:
        """Two denoising steps at the native size and a 5 s clip's frames: torch.compile traces
        and compiles here, at load (preload), not in the first user's job."""
        import time

        import torch
        from PIL import Image

        from reelserve.engines.diffusers import pipelines
        from reelserve.engines.diffusers.pipelines import CallPlan

        width, height = self._fit(profile, *profile.native_wh, generation_frames(profile, 5.0))
        from reelserve.engines.diffusers.profiles import PIPELINE_WORKFLOWS

        can = PIPELINE_WORKFLOWS.get(profile.pipeline, frozenset({Workflow.T2V}))
        # The transformer sees the same shapes whatever the inputs: warm up without input videos.
        workflow = next((w for w in (Workflow.T2V, Workflow.I2V, Workflow.FLF2V) if w in can), None)
        if workflow is None:
            log.info("no warm-up for %s (it needs input videos); the first job compiles", profile.pipeline)
            return
        grey = Image.new("RGB", (width, height), (127, 127, 127))
        needs_frame = workflow in (Workflow.I2V, Workflow.FLF2V)
        plan = CallPlan(
            workflow=workflow, prompt="warm-up", negative_prompt=profile.negative_prompt,
            width=width, height=height, num_frames=generation_frames(profile, 5.0),
            fps=profile.native_fps, steps=2, guidance=profile.guidance, guidance_2=profile.guidance_2,
            generators=[torch.Generator("cpu").manual_seed(0)],
            first=grey if needs_frame else None,
            last=grey if workflow is Workflow.FLF2V else None,
            edit_strength=profile.edit_strength,
        )
        start = time.perf_counter()
        pipelines.run(loaded, plan, lambda pipe, i, t, kwargs: kwargs)
        log.info("warmed up compiled %s in %.1f s", profile.pipeline, time.perf_counter() - start)

    # -- one pipeline call ----------------------------------------------------------------

    def _entry(self, spec: GenerationSpec) -> ProfileEntry:
        entry = self.profiles.get(spec.model, spec.workflow)
        if entry is None:
            raise EngineError(
                "modelUnavailable",
                f"no diffusers profile for model {spec.model!r} workflow {spec.workflow.value!r}",
                parameter="model",
                kind=ErrorKind.UNAVAILABLE,
            )
        return entry

    def _plan(
        self, entry: ProfileEntry, spec: GenerationSpec, inputs: ResolvedInputs, seeds: list[int]
    ) -> CallPlan:
        import torch

        from reelserve.engines.diffusers.pipelines import CallPlan

        profile = entry.profile
        assert spec.width is not None and spec.height is not None and spec.duration is not None
        frames = generation_frames(profile, spec.duration)
        gen_w, gen_h = self._fit(profile, *generation_size(profile, spec.width, spec.height), frames)

        def fit(image: Image.Image) -> Image.Image:
            return cover_fit(image, gen_w, gen_h)

        refs = [cover_fit(im, gen_w, gen_h) for im in inputs.reference_images]
        # Kling's reference videos have no VACE counterpart; their first frames serve as references.
        refs += [cover_fit(_first_frame_of(v), gen_w, gen_h) for v in inputs.reference_videos]
        video = None
        if inputs.input_video is not None and spec.workflow is Workflow.V2V:
            video = _read_video(inputs.input_video, profile.native_fps, frames, gen_w, gen_h)
        guidance = profile.guidance_for(spec.cfg_scale)
        guidance_2 = (
            profile.guidance_2 * guidance / profile.guidance
            if profile.guidance_2 is not None and profile.guidance > 0
            else None
        )
        return CallPlan(
            workflow=spec.workflow,
            prompt=spec.positive_prompt or "",
            negative_prompt=spec.negative_prompt or profile.negative_prompt,
            width=gen_w,
            height=gen_h,
            num_frames=frames,
            fps=profile.native_fps,
            steps=profile.steps,
            guidance=guidance,
            guidance_2=guidance_2,
            # CPU generators: the same seed gives the same noise on every device.
            generators=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
            first=fit(inputs.first_frame) if inputs.first_frame is not None else None,
            last=fit(inputs.last_frame) if inputs.last_frame is not None else None,
            reference_images=refs,
            video=video,
            edit_strength=profile.edit_strength,
        )

    def _run(
        self,
        entry: ProfileEntry,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seeds: list[int],
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> list[Clip]:
        from reelserve.engines.capabilities import capability
        from reelserve.engines.diffusers import pipelines

        if cancelled():
            raise CancelledError(CANCELLED_CODE, "the job was cancelled before it started")
        # The API refuses these at submit from the same data; a job that got past it (queued
        # before a profile change) is refused here rather than rendered without what it asked.
        cap = capability(self.settings, spec.model, spec.workflow, profiles=self.profiles)
        if cap is not None:
            cap.check(spec)
        plan = self._plan(entry, spec, inputs, seeds)
        steps = plan.steps
        group = self.group if self._parallel(entry.profile) else None
        if group is not None and group.rank == 0:
            # Every rank makes this same call (their collectives meet inside the transformer).
            group.announce(("render", entry.model, entry.workflow.value, spec, inputs, seeds))

        def on_step(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            # Editing runs fewer steps than planned (denoise strength): the pipeline knows how many.
            total = getattr(pipe, "_num_timesteps", None) or steps
            progress(_DENOISE_SHARE * min(1.0, (i + 1) / total))
            stop = cancelled()
            if group is not None:
                # All ranks leave at the same step, or the others would wait in a collective.
                stop = group.agree(stop)
            if stop:
                # The documented diffusers way to stop the loop ...
                pipe._interrupt = True
                # ... but the pipelines still VAE-decode the half-denoised latents after the loop,
                # seconds of GPU work for nothing; leaving by exception skips it.
                raise _Interrupted
            return kwargs

        with self._use(entry.profile) as loaded:
            if entry.profile.cache is not None:
                # Cache hooks keep per-call state; a cancelled call may leave some behind.
                from reelserve.engines.diffusers.options import reset_cache

                reset_cache(loaded.pipe)
            try:
                if entry.profile.camera:
                    from reelserve.engines.diffusers.camera import apply_camera

                    # Adapter weights live on the shared transformer: another job on this
                    # pipeline must not switch them while this one denoises.
                    with loaded.call_lock:
                        active = apply_camera(loaded.pipe, entry.profile.camera, spec.camera)
                        if active is not None:
                            log.info("camera LoRA %s at weight %.2f", *active)
                        output = pipelines.run(loaded, plan, on_step)
                else:
                    output = pipelines.run(loaded, plan, on_step)
            except _Interrupted:
                raise CancelledError(
                    CANCELLED_CODE, f"the job was cancelled during denoising ({steps} steps planned)"
                ) from None
            except ReelserveError:
                raise
            except Exception as exc:  # an engine crash: keep its text, map to the one error tree
                if group is not None:
                    # Split over a group, a failure leaves the others waiting in (or failing)
                    # a collective: this rank cannot render anything more; the group restarts.
                    log.exception("rank %d: split render of %s failed; the group must restart",
                                  group.rank, entry.label)
                    raise WorkerBrokenError(
                        "workerUnavailable", f"rank {group.rank} of the group rendering "
                        f"{entry.label} failed mid-render: {type(exc).__name__}: {exc}",
                    ) from exc
                log.exception("diffusers pipeline %s failed", entry.profile.pipeline)
                raise EngineError(
                    "engineFailed",
                    f"pipeline {entry.profile.pipeline!r} failed for {entry.label}: {type(exc).__name__}: {exc}",
                ) from exc
        progress(1.0)
        assert spec.width is not None and spec.height is not None
        clips = [
            _clip(output.frames[b], plan.fps, spec.width, spec.height, spec.fps, spec.num_frames)
            for b in range(len(seeds))
        ]
        if spec.sound and output.audio is not None and output.sample_rate is not None:
            for b, clip in enumerate(clips):
                # The encoder trims the model's slightly long audio to the clip, sample-exact.
                clip.generated_audio = GeneratedAudio(output.audio[b], output.sample_rate)
        elif spec.keep_original_sound:
            source = _original_sound(spec, inputs)
            for clip in clips:
                clip.audio = source
        return clips


def _original_sound(spec: GenerationSpec, inputs: ResolvedInputs) -> AudioSource | None:
    """The input audio ``keepOriginalSound`` carries: the edited video's (v2v), else the first
    reference video with sound (r2v), as the preview engine does."""
    if spec.workflow is Workflow.V2V and inputs.input_video is not None:
        return AudioSource(inputs.input_video.path) if inputs.input_video.has_audio else None
    if spec.workflow is Workflow.R2V:
        video = next((v for v in inputs.reference_videos if v.has_audio), None)
        return AudioSource(video.path) if video is not None else None
    return None


def _clip(video: np.ndarray, src_fps: int, width: int, height: int, fps: int, count: int) -> Clip:
    """A lazy clip: each output frame is fitted from the generated one only when the encoder asks."""
    import numpy as np
    from PIL import Image as PILImage

    indices = resample_indices(int(video.shape[0]), src_fps, count, fps)
    # One uint8 copy (a quarter of the float frames); fitting happens frame by frame.
    source = (np.clip(video, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def frames() -> Iterator[np.ndarray]:
        last_index, last_frame = -1, None
        for i in indices:
            if i != last_index:
                image = PILImage.fromarray(source[i])
                if image.size != (width, height):
                    image = cover_fit(image, width, height)
                last_index, last_frame = i, np.asarray(image, dtype=np.uint8)
            assert last_frame is not None
            yield last_frame

    return Clip(frames=frames(), num_frames=count, width=width, height=height, fps=fps)


def _folder_bytes(folder: Path) -> int:
    """Weights on disk: the load estimate before the real parameter bytes are known."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith((".safetensors", ".bin", ".pt", ".pth", ".gguf")):
                total += (Path(root) / name).stat().st_size
    return total


def _default_budget(device: str) -> int | None:
    """90% of the GPU's memory, or half the machine's RAM on the CPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return int(torch.cuda.get_device_properties(index).total_memory * 0.9)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return None
