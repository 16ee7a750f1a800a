"""The CPU preview engine itself: per workflow, which frames to make and at what pace.

``sound: true`` asks for generated audio, which this engine cannot make. Submit refuses it first
(:mod:`reelserve.engines.capabilities`); :meth:`generate` keeps the same refusal as a backstop for a
job that reaches it anyway (:class:`~reelserve.errors.EngineError` code ``unsupportedSound``, kind
``invalid`` so it is not retried) rather than returning a silent clip that pretends otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from reelserve.engines.capabilities import SOUND_PARAMETER
from reelserve.engines.preview.camera import (
    CameraCanvas,
    CameraPose,
    camera_pose,
    ease,
    sample_amounts,
)
from reelserve.engines.preview.scenes import Scene, blend, video_frames
from reelserve.errors import CANCELLED_CODE, CancelledError, EngineError, ErrorKind
from reelserve.media.clip import (
    AudioSource,
    CancelledFn,
    Clip,
    ProgressFn,
    ResolvedInputs,
    VideoInput,
)
from reelserve.tasks import GenerationSpec, Workflow

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["SOUND_PARAMETER", "PreviewEngine"]

_XFADE_SECONDS = 0.5  # r2v cross-fade length


class PreviewEngine:
    """CPU engine without weights (what it renders per workflow: :mod:`reelserve.engines.preview`)."""

    name = "preview"

    def supports(self, spec: GenerationSpec) -> bool:
        """Every workflow of the catalog (``sound`` is refused at submit by the capabilities)."""
        return spec.workflow in tuple(Workflow)

    def generate(
        self,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seed: int,
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> Clip:
        """Render ``spec`` with ``seed`` as a lazy :class:`Clip` (frames made while encoding).

        Raises:
            EngineError: ``unsupportedSound`` for ``sound: true``; ``invalidSpec`` for an
                unresolved spec; ``missingInput`` when the workflow's input is absent.
            CancelledError: (from the frame iterator) once ``cancelled()`` is true.
        """
        if spec.sound:
            raise EngineError(
                "unsupportedSound",
                f"{SOUND_PARAMETER}=true asks for generated audio, which the preview engine "
                "cannot make (it runs no generative model); send sound=false, or configure a "
                "diffusers profile with an audio-capable model for this model",
                parameter=SOUND_PARAMETER,
                allowed_values=[False],
                kind=ErrorKind.INVALID,
            )
        if spec.width is None or spec.height is None or spec.duration is None:
            raise EngineError(
                "invalidSpec",
                f"the spec is not resolved (width={spec.width}, height={spec.height}, "
                f"duration={spec.duration}); resolve sizes from the inputs first",
            )
        width, height, fps, n = spec.width, spec.height, spec.fps, spec.num_frames
        audio: AudioSource | None = None
        make: Callable[[], Iterator[np.ndarray]]
        wf = spec.workflow
        if wf is Workflow.I2V:
            first = _require(inputs.first_frame, "inputs.frameImages", "a first frame image")
            make = lambda: self._i2v(first, spec, width, height, n, seed)  # noqa: E731
        elif wf is Workflow.FLF2V:
            first = _require(inputs.first_frame, "inputs.frameImages", "a first frame image")
            last = _require(inputs.last_frame, "inputs.frameImages", "a last frame image")
            make = lambda: self._flf2v(first, last, spec, width, height, n, seed)  # noqa: E731
        elif wf is Workflow.R2V:
            if not inputs.reference_images and not inputs.reference_videos:
                raise _missing("inputs.referenceImages", "reference images or videos")
            make = lambda: self._r2v(inputs, width, height, fps, n, seed)  # noqa: E731
            if spec.keep_original_sound:
                with_audio = next((v for v in inputs.reference_videos if v.has_audio), None)
                if with_audio is not None:
                    audio = AudioSource(with_audio.path)
        elif wf is Workflow.V2V:
            video = _require(inputs.input_video, "inputs.video", "an input video")
            make = lambda: self._v2v(video, width, height, fps, seed)  # noqa: E731
            if spec.keep_original_sound and video.has_audio:
                audio = AudioSource(video.path)
        else:
            make = lambda: self._t2v(spec, width, height, fps, n, seed)  # noqa: E731

        return Clip(
            frames=_paced(make, n, progress, cancelled),
            num_frames=n,
            width=width,
            height=height,
            fps=fps,
            audio=audio,
        )

    # ---------------------------------------------------------------- workflows

    def _i2v(
        self, image: Image.Image, spec: GenerationSpec, w: int, h: int, n: int, seed: int
    ) -> Iterator[np.ndarray]:
        end = camera_pose(spec.camera, w, h, seed)
        amounts = [ease(i / max(1, n - 1)) for i in range(n)]
        canvas = CameraCanvas(image, w, h, [end.at(a) for a in sample_amounts(amounts)])
        for a in amounts:
            yield canvas.render(end.at(a))

    def _flf2v(
        self,
        first: Image.Image,
        last: Image.Image,
        spec: GenerationSpec,
        w: int,
        h: int,
        n: int,
        seed: int,
    ) -> Iterator[np.ndarray]:
        end = camera_pose(spec.camera, w, h, seed)
        amounts = [ease(i / max(1, n - 1)) for i in range(n)]
        # the first image moves away with the camera; the last arrives from the opposite pose
        arrive = CameraPose(
            dx=-end.dx, dy=-end.dy, scale=1 / end.scale, roll=-end.roll, yaw=-end.yaw,
            pitch=-end.pitch,
        )  # fmt: skip
        a_canvas = CameraCanvas(first, w, h, [end.at(a) for a in sample_amounts(amounts)])
        b_canvas = CameraCanvas(last, w, h, [arrive.at(1 - a) for a in sample_amounts(amounts)])
        for i, a in enumerate(amounts):
            if i == 0:
                yield a_canvas.frame0
            elif i == n - 1:
                yield b_canvas.frame0
            else:
                yield blend(a_canvas.render(end.at(a)), b_canvas.render(arrive.at(1 - a)), a)

    def _r2v(
        self, inputs: ResolvedInputs, w: int, h: int, fps: int, n: int, seed: int
    ) -> Iterator[np.ndarray]:
        import numpy as np

        rng = np.random.default_rng([seed, 0x2E2])
        sources: list[Callable[[int], Generator[np.ndarray, None, None]]] = []

        def still(
            img: Image.Image, salt: int
        ) -> Callable[[int], Generator[np.ndarray, None, None]]:
            def frames(count: int) -> Generator[np.ndarray, None, None]:
                end = CameraPose(
                    dx=float(rng.uniform(-0.03, 0.03)) * w,
                    dy=float(rng.uniform(-0.03, 0.03)) * h,
                    scale=float(rng.uniform(1.05, 1.12)),
                )
                amounts = [i / max(1, count - 1) for i in range(count)]
                canvas = CameraCanvas(img, w, h, [end.at(a) for a in sample_amounts(amounts)])
                for a in amounts:
                    yield canvas.render(end.at(a))

            return frames

        def moving(video: VideoInput) -> Callable[[int], Generator[np.ndarray, None, None]]:
            def frames(count: int) -> Generator[np.ndarray, None, None]:
                stream = video_frames(video, w, h, fps)
                try:
                    for _ in range(count):
                        yield next(stream)
                finally:
                    stream.close()

            return frames

        for i, img in enumerate(inputs.reference_images):
            sources.append(still(img, i))
        for video in inputs.reference_videos:
            sources.append(moving(video))
        k = len(sources)
        xfade = min(round(_XFADE_SECONDS * fps), n // (2 * k)) if k > 1 else 0
        # segment j covers [start_j, start_j + length_j); neighbours overlap by `xfade` frames
        base = (n + (k - 1) * xfade) / k
        starts = [round(j * (base - xfade)) for j in range(k)]
        ends = [*[s + round(base) for s in starts[:-1]], n]
        active: dict[int, Generator[np.ndarray, None, None]] = {}
        for i in range(n):
            frame: np.ndarray | None = None
            for j in range(k):
                if starts[j] <= i < ends[j]:
                    if j not in active:
                        active[j] = sources[j](ends[j] - starts[j])
                    current = next(active[j])
                    if frame is None:
                        frame = current
                    else:  # overlap: fade from segment j-1 into j
                        weight = ease((i - starts[j] + 1) / (ends[j - 1] - starts[j] + 1))
                        frame = blend(frame, current, weight)
                elif j in active and i >= ends[j]:
                    active.pop(j).close()
            assert frame is not None
            yield frame

    def _v2v(self, video: VideoInput, w: int, h: int, fps: int, seed: int) -> Iterator[np.ndarray]:
        import numpy as np

        rng = np.random.default_rng([seed, 0x2F2])
        # Seeded grade: per-channel gain and lift, a contrast curve and a vignette, strong enough
        # to see at a glance that the clip went through the engine.
        gain = rng.uniform(0.85, 1.15, size=3)
        lift = rng.uniform(-12, 18, size=3)
        contrast = float(rng.uniform(1.05, 1.25))
        x = np.arange(256, dtype=float)
        curve = 127.5 + (x - 127.5) * contrast
        luts = [np.clip(curve * gain[c] + lift[c], 0, 255).astype(np.uint8) for c in range(3)]
        lut = np.stack(luts, axis=1)  # (256, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        vignette = np.clip(256 - float(rng.uniform(50, 90)) * r2 / 2, 0, 256).astype(np.uint16)
        vignette = vignette[:, :, None]
        channel = np.arange(3)
        stream = video_frames(video, w, h, fps)
        try:
            for frame in stream:
                graded = lut[frame, channel]  # per-channel lookup
                yield ((graded.astype(np.uint16) * vignette) >> 8).astype(np.uint8)
        finally:
            stream.close()

    def _t2v(
        self, spec: GenerationSpec, w: int, h: int, fps: int, n: int, seed: int
    ) -> Iterator[np.ndarray]:
        scene = Scene(spec.positive_prompt or "", w, h, seed)
        for i in range(n):
            yield scene.render(i / fps, i / max(1, n - 1))


def _paced(
    make: Callable[[], Iterator[np.ndarray]],
    n: int,
    progress: ProgressFn,
    cancelled: CancelledFn,
) -> Iterator[np.ndarray]:
    """Wrap a frame generator: exactly ``n`` frames, progress after each, cancel between them."""
    if cancelled():
        raise CancelledError(CANCELLED_CODE, "the task was cancelled before rendering started")
    frames = make()
    try:
        for i in range(n):
            if cancelled():
                raise CancelledError(CANCELLED_CODE, f"the task was cancelled at frame {i} of {n}")
            yield next(frames)
            progress((i + 1) / n)
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _missing(parameter: str, what: str) -> EngineError:
    return EngineError(
        "missingInput",
        f"{parameter}: the preview engine needs {what} for this workflow, and none was resolved",
        parameter=parameter,
        kind=ErrorKind.INVALID,
    )


def _require(value: Any, parameter: str, what: str) -> Any:
    if value is None:
        raise _missing(parameter, what)
    return value
