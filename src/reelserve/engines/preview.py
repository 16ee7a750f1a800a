"""The CPU preview engine: real, playable clips that honour the request, without any model.

It is honest about what it is: no generative model runs. It moves a virtual camera over the
input images, cross-fades between first and last frames, plays and grades input videos, and draws
a seeded animated scene with the prompt as a caption. Everything is deterministic for a seed.

Per workflow (see ``docs/media.md`` for the full description):

* ``i2v``: frame 0 is the first image fitted to the output size by
  :func:`~reelserve.media.frames.cover_fit` (scale to cover, centre crop); the camera then moves
  over it (``cameraControl``, or a gentle seeded drift and zoom without one). Areas the camera
  reveals beyond the image are filled by mirroring it.
* ``flf2v``: starts exactly on the fitted first image and ends exactly on the fitted last image;
  in between the first image moves with the camera while the last one settles into place, with
  a smooth (smoothstep) cross-fade.
* ``r2v``: a slideshow of the reference images and reference videos (played at the output fps),
  each with a slow push-in, joined by cross-fades.
* ``v2v``: the input video re-timed to the output fps and re-sized to the output size, with a
  visible seeded colour grade and vignette; its audio is carried with ``keepOriginalSound``.
* ``t2v``: a seeded parallax landscape with drifting shapes, the prompt as a caption.

``sound: true`` asks for generated audio, which this engine cannot make: :meth:`generate` refuses
it with :class:`~reelserve.errors.EngineError` code ``unsupportedSound`` (parameter
``providerSettings.klingai.sound``, kind ``invalid`` so it is not retried) rather than returning a
silent clip that pretends otherwise.

Camera axes follow Kling's documented meaning; the content on screen moves the opposite way to
the camera. Value -10..10 scales the amount at the end of the clip linearly, sign included:

============ =============================== ======================================
axis         camera, positive value          content on screen, positive value
============ =============================== ======================================
horizontal   moves right                     shifts left (25% of width at 10)
vertical     moves up                        shifts down (25% of height at 10)
pan          rotates up (about the x axis)   shifts down with a keystone (12 deg)
tilt         rotates right (about y axis)    shifts left with a keystone (12 deg)
roll         rolls clockwise                 rotates counter-clockwise (20 deg)
zoom         widens the field of view        shrinks (scale 1/1.5 at 10; 1.5 at -10)
============ =============================== ======================================
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reelserve.engines.base import (
    AudioSource,
    CancelledFn,
    Clip,
    ProgressFn,
    ResolvedInputs,
    VideoInput,
)
from reelserve.errors import CancelledError, EngineError, ErrorKind
from reelserve.media.frames import cover_canvas, cover_fit, decode_video
from reelserve.tasks import CameraControl, GenerationSpec, Workflow

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "PRESETS",
    "SOUND_PARAMETER",
    "CameraPose",
    "PreviewEngine",
    "camera_pose",
]

SOUND_PARAMETER = "providerSettings.klingai.sound"

# Full-scale amounts (|value| = 10) per axis, applied over the whole clip.
_SHIFT = 0.25  # fraction of width/height
_ROTATE_DEG = 12.0  # pan/tilt camera rotation
_ROLL_DEG = 20.0
_ZOOM = 1.5
_FOV_DEG = 60.0  # horizontal field of view of the virtual camera (for pan/tilt perspective)
_XFADE_SECONDS = 0.5  # r2v cross-fade length
_SUPERSAMPLE = 2  # moving-camera frames sample a canvas upsampled this much (see _CameraCanvas)


@dataclass(frozen=True)
class CameraPose:
    """Where the virtual camera is relative to frame 0, expressed as what the viewer sees.

    ``dx``/``dy``: content shift in output pixels (+x right, +y down); ``scale``: content
    magnification (> 1 zooms in); ``roll``: content rotation in degrees, counter-clockwise
    positive; ``yaw``: camera rotation in degrees, right positive; ``pitch``: camera rotation in
    degrees, up positive.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    roll: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0

    def at(self, amount: float) -> CameraPose:
        """This pose applied ``amount`` of the way (0 = frame 0, 1 = this pose)."""
        return CameraPose(
            dx=self.dx * amount,
            dy=self.dy * amount,
            scale=self.scale**amount,
            roll=self.roll * amount,
            yaw=self.yaw * amount,
            pitch=self.pitch * amount,
        )

    @property
    def is_axis_aligned(self) -> bool:
        """True when the pose is only shift and zoom (no rotation: the cheapest frames)."""
        return self.roll == 0.0 and self.yaw == 0.0 and self.pitch == 0.0


PRESETS: dict[str, Callable[[int, int], CameraPose]] = {
    # camera goes down (content up) and back (content shrinks)
    "down_back": lambda w, h: CameraPose(dy=-0.18 * h, scale=1 / 1.35),
    # camera goes forward (content grows) and tilts up (content down)
    "forward_up": lambda w, h: CameraPose(scale=1.35, pitch=8.0),
    # camera turns right (content left, keystone) while moving forward
    "right_turn_forward": lambda w, h: CameraPose(scale=1.25, yaw=10.0),
    "left_turn_forward": lambda w, h: CameraPose(scale=1.25, yaw=-10.0),
}
"""Kling's compound camera presets as end poses (functions of output width and height)."""


def camera_pose(camera: CameraControl | None, width: int, height: int, seed: int) -> CameraPose:
    """The end-of-clip pose for ``camera`` (or the gentle seeded move when it is None)."""
    if camera is None:
        import numpy as np

        rng = np.random.default_rng([seed, 0x5EED])
        zoom_in = bool(rng.integers(0, 2))
        scale = float(rng.uniform(1.04, 1.10))
        angle = float(rng.uniform(0, 2 * math.pi))
        drift = float(rng.uniform(0.015, 0.035))
        return CameraPose(
            dx=math.cos(angle) * drift * width,
            dy=math.sin(angle) * drift * height,
            scale=scale if zoom_in else 1 / scale,
        )
    if camera.type in PRESETS:
        return PRESETS[camera.type](width, height)
    if camera.type != "simple":
        raise EngineError(
            "unsupportedCameraControl",
            f"cameraControl.type {camera.type!r} is not known to the preview engine",
            parameter="providerSettings.klingai.cameraControl.type",
            allowed_values=["simple", *PRESETS],
        )
    pose = CameraPose()
    for axis, raw in camera.config.items():
        a = float(raw) / 10.0
        if axis == "horizontal":
            pose = replace(pose, dx=pose.dx - a * _SHIFT * width)
        elif axis == "vertical":
            pose = replace(pose, dy=pose.dy + a * _SHIFT * height)
        elif axis == "pan":
            pose = replace(pose, pitch=pose.pitch + a * _ROTATE_DEG)
        elif axis == "tilt":
            pose = replace(pose, yaw=pose.yaw + a * _ROTATE_DEG)
        elif axis == "roll":
            pose = replace(pose, roll=pose.roll + a * _ROLL_DEG)
        elif axis == "zoom":
            pose = replace(pose, scale=pose.scale * _ZOOM ** (-a))
        else:
            raise EngineError(
                "unsupportedCameraControl",
                f"cameraControl.config axis {axis!r} is not known",
                parameter="providerSettings.klingai.cameraControl.config",
                allowed_values=["horizontal", "vertical", "pan", "tilt", "roll", "zoom"],
            )
    return pose


def _ease(t: float) -> float:
    """Smoothstep: starts and ends at rest, so moves and fades do not jerk."""
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _homography(pose: CameraPose, width: int, height: int) -> np.ndarray:
    """3x3 matrix mapping output pixel coordinates to frame-0 coordinates for ``pose``."""
    import numpy as np

    cx, cy = width / 2.0, height / 2.0
    f = (width / 2.0) / math.tan(math.radians(_FOV_DEG) / 2.0)
    # 1. undo the content shift, centred
    t_in = np.array([[1, 0, -cx - pose.dx], [0, 1, -cy - pose.dy], [0, 0, 1]], dtype=float)
    # 2. undo zoom and roll. Screen y points down, so a counter-clockwise turn on screen is a
    # clockwise one in these coordinates; undoing it turns the other way.
    th = math.radians(pose.roll)
    c, s = math.cos(th), math.sin(th)
    rs = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=float) / pose.scale
    rs[2, 2] = 1.0
    # 3. camera rotation as a pinhole homography K R K^-1 (yaw about y, pitch about x)
    k = np.diag([f, f, 1.0])
    kinv = np.diag([1 / f, 1 / f, 1.0])
    yw, pt = math.radians(pose.yaw), math.radians(pose.pitch)
    ry = np.array(
        [[math.cos(yw), 0, math.sin(yw)], [0, 1, 0], [-math.sin(yw), 0, math.cos(yw)]], dtype=float
    )
    rx = np.array(
        [[1, 0, 0], [0, math.cos(pt), -math.sin(pt)], [0, math.sin(pt), math.cos(pt)]], dtype=float
    )
    cam = k @ ry @ rx @ kinv
    t_out = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=float)
    m = t_out @ cam @ rs @ t_in
    return m / m[2, 2]


def _translation(dx: float, dy: float) -> np.ndarray:
    import numpy as np

    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _to_supersampled(m: np.ndarray) -> np.ndarray:
    """``m`` (to canvas coordinates) composed with canvas -> supersampled canvas coordinates.

    Pixel ``k`` of the canvas is pixel ``S * k`` of the supersampled one (see
    :meth:`_CameraCanvas._supersampled`), so a canvas coordinate ``x`` is ``S * x - (S - 1) / 2``.
    """
    import numpy as np

    s, off = float(_SUPERSAMPLE), -(_SUPERSAMPLE - 1) / 2.0
    out = np.array([[s, 0.0, off], [0.0, s, off], [0.0, 0.0, 1.0]]) @ m
    return out / out[2, 2]


def _map_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    import numpy as np

    homo = np.c_[pts, np.ones(len(pts))] @ m.T
    return homo[:, :2] / homo[:, 2:3]


class _CameraCanvas:
    """An image prepared for a moving camera: scaled to cover, padded by mirroring.

    The padding is exactly what the camera path needs (computed from the poses' corners), so the
    sampling never leaves the canvas. Every moved frame is one nearest-neighbour
    ``Image.transform`` of the canvas upsampled 2x (bilinear, built once): the upsampled canvas
    is band-limited, so this resamples with bilinear quality and at most 1/4 px position error,
    at a fraction of the cost of a bilinear transform (which evaluates its filter per pixel).
    """

    def __init__(self, image: Image.Image, width: int, height: int, poses: list[CameraPose]):
        import numpy as np
        from PIL import Image as PILImage

        self.width, self.height = width, height
        scaled, ox, oy = cover_canvas(image, width, height)
        corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], dtype=float)
        lo = np.array([0.0, 0.0])
        hi = np.array([float(width), float(height)])
        for pose in poses:
            mapped = _map_points(_homography(pose, width, height), corners)
            lo = np.minimum(lo, mapped.min(axis=0))
            hi = np.maximum(hi, mapped.max(axis=0))
        # crop coordinates -> scaled-image coordinates; pad what falls outside (+2 px for the
        # bilinear footprint)
        sw, sh = scaled.size
        pad_l = max(0, math.ceil(-(lo[0] + ox)) + 2)
        pad_t = max(0, math.ceil(-(lo[1] + oy)) + 2)
        pad_r = max(0, math.ceil(hi[0] + ox - sw) + 2)
        pad_b = max(0, math.ceil(hi[1] + oy - sh) + 2)
        if pad_l or pad_t or pad_r or pad_b:
            arr = np.asarray(scaled)
            arr = np.pad(arr, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="symmetric")
            scaled = PILImage.fromarray(arr)
        self.image = scaled
        self.ox, self.oy = ox + pad_l, oy + pad_t
        self.frame0 = np.asarray(scaled.crop((self.ox, self.oy, self.ox + width, self.oy + height)))
        self._image2: Image.Image | None = None
        self._image2t: Image.Image | None = None

    def _supersampled(self, transposed: bool = False) -> Image.Image:
        """The canvas upsampled ``_SUPERSAMPLE`` times, or that of its transpose.

        Built on first use (the static frame 0 needs neither, and most moves only one).
        """
        from PIL import Image as PILImage

        cached = self._image2t if transposed else self._image2
        if cached is None:
            src = self.image.transpose(PILImage.Transpose.TRANSPOSE) if transposed else self.image
            # Pixel 2k of the result sits exactly on pixel k of the canvas (the box is shifted by
            # a quarter pixel), so an unmoved camera reproduces frame 0 bit for bit.
            w, h = src.size
            q = 0.5 / _SUPERSAMPLE
            cached = src.resize(
                (w * _SUPERSAMPLE - 1, h * _SUPERSAMPLE - 1),
                PILImage.Resampling.BILINEAR,
                box=(q, q, w - q, h - q),
            )
            if transposed:
                self._image2t = cached
            else:
                self._image2 = cached
        return cached

    def render(self, pose: CameraPose) -> np.ndarray:
        """The camera's view at ``pose`` as an RGB array."""
        import numpy as np
        from PIL import Image as PILImage

        if pose == CameraPose():
            return self.frame0
        w, h = self.width, self.height
        if pose.is_axis_aligned:
            # Shift and zoom: nearest-neighbour sampling of the 2x upsampled canvas. The canvas is
            # band-limited (it was upsampled), so this is a bilinear-quality resample with at most
            # 1/4 px position error, and it reads memory row by row: ~1-2 ms per 720p frame
            # against ~7 ms for a bilinear resize (measured; see docs/benchmarks.md).
            cx, cy = w / 2.0, h / 2.0
            x0 = cx + (-cx - pose.dx) / pose.scale + self.ox
            y0 = cy + (-cy - pose.dy) / pose.scale + self.oy
            k = _SUPERSAMPLE / pose.scale
            out = self._supersampled().transform(
                (w, h),
                PILImage.Transform.AFFINE,
                (k, 0.0, _SUPERSAMPLE * x0 - 0.5, 0.0, k, _SUPERSAMPLE * y0 - 0.5),
                PILImage.Resampling.NEAREST,
            )
            return np.asarray(out)
        # Roll, pan, tilt: the same nearest-neighbour sampling of the 2x canvas through the exact
        # map, ~3-5 ms per 720p frame where a bilinear warp of the 1x canvas took ~18 ms (see
        # docs/benchmarks.md).
        m = _to_supersampled(_translation(self.ox, self.oy) @ _homography(pose, w, h))
        nearest = PILImage.Resampling.NEAREST
        if pose.yaw == 0.0 and pose.pitch == 0.0:
            # Roll (with shift and zoom) is affine: Pillow's fixed-point affine loop.
            out = self._supersampled().transform(
                (w, h), PILImage.Transform.AFFINE, _coefficients(m, 6), nearest
            )
        elif abs(pose.yaw) <= abs(pose.pitch):
            # Pan: each output row reads along one canvas row (cache friendly).
            out = self._supersampled().transform(
                (w, h), PILImage.Transform.PERSPECTIVE, _coefficients(m, 8), nearest
            )
        else:
            # Tilt: output columns follow canvas columns, so each output row reads across many
            # canvas rows. Render the transposed view from the transposed canvas, where they are
            # rows again, and transpose it back: the same pixels, ~10% less time over a tilt
            # clip (up to 30% on a single frame at 12 degrees).
            out = (
                self._supersampled(transposed=True)
                .transform(
                    (h, w), PILImage.Transform.PERSPECTIVE, _coefficients(_swap_xy(m), 8), nearest
                )
                .transpose(PILImage.Transpose.TRANSPOSE)
            )
        return np.asarray(out)


def _coefficients(m: np.ndarray, count: int) -> tuple[float, ...]:
    """The first ``count`` entries of ``m`` (normalised, row major) for ``Image.transform``."""
    return tuple(float(v) for v in (m / m[2, 2]).flatten()[:count])


def _swap_xy(m: np.ndarray) -> np.ndarray:
    """``m`` acting on transposed images: x and y swapped on both sides."""
    order = [1, 0, 2]
    return m[order][:, order]


def _blend(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """``a`` * (1 - weight) + ``b`` * weight, in integer arithmetic (cheap on big frames)."""
    import numpy as np

    if weight <= 0.0:
        return a
    if weight >= 1.0:
        return b
    wb = round(weight * 256)
    out = a.astype(np.uint16) * (256 - wb)
    out += b.astype(np.uint16) * wb
    out += 128
    return (out >> 8).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Video input reading (re-timed)
# --------------------------------------------------------------------------------------------


def _video_frames(
    video: VideoInput, width: int, height: int, fps: int
) -> Generator[np.ndarray, None, None]:
    """Endless stream of ``video`` frames re-timed to ``fps`` and cover-fitted (it loops).

    Output frame ``j`` shows the source frame on screen at time ``j / fps`` (frames are dropped
    or repeated as the rates require).
    """
    import contextlib

    import numpy as np

    src_fps = video.fps if video.fps > 0 else float(fps)
    while True:
        out_index = 0
        with contextlib.closing(decode_video(video.path)) as decoded:
            for index, frame in enumerate(decoded):
                fitted: np.ndarray | None = None
                while math.floor(out_index * src_fps / fps + 1e-6) <= index:
                    if fitted is None:  # convert only the frames that are shown
                        img = frame.to_image()
                        if img.size != (width, height):
                            img = cover_fit(img, width, height)
                        fitted = np.asarray(img)
                    yield fitted
                    out_index += 1
        if out_index == 0:
            raise EngineError(
                "invalidVideoData", f"the input video {video.path.name!r} has no frames"
            )


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


class PreviewEngine:
    """CPU engine without weights (see the module docstring for what it renders)."""

    name = "preview"

    def supports(self, spec: GenerationSpec) -> bool:
        """Every workflow of the catalog; refusals (``sound``) come from :meth:`generate`."""
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
        amounts = [_ease(i / max(1, n - 1)) for i in range(n)]
        canvas = _CameraCanvas(image, w, h, [end.at(a) for a in _sample(amounts)])
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
        amounts = [_ease(i / max(1, n - 1)) for i in range(n)]
        # the first image moves away with the camera; the last arrives from the opposite pose
        arrive = CameraPose(
            dx=-end.dx, dy=-end.dy, scale=1 / end.scale, roll=-end.roll, yaw=-end.yaw,
            pitch=-end.pitch,
        )  # fmt: skip
        a_canvas = _CameraCanvas(first, w, h, [end.at(a) for a in _sample(amounts)])
        b_canvas = _CameraCanvas(last, w, h, [arrive.at(1 - a) for a in _sample(amounts)])
        for i, a in enumerate(amounts):
            if i == 0:
                yield a_canvas.frame0
            elif i == n - 1:
                yield b_canvas.frame0
            else:
                yield _blend(a_canvas.render(end.at(a)), b_canvas.render(arrive.at(1 - a)), a)

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
                canvas = _CameraCanvas(img, w, h, [end.at(a) for a in _sample(amounts)])
                for a in amounts:
                    yield canvas.render(end.at(a))

            return frames

        def moving(video: VideoInput) -> Callable[[int], Generator[np.ndarray, None, None]]:
            def frames(count: int) -> Generator[np.ndarray, None, None]:
                stream = _video_frames(video, w, h, fps)
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
                        weight = _ease((i - starts[j] + 1) / (ends[j - 1] - starts[j] + 1))
                        frame = _blend(frame, current, weight)
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
        stream = _video_frames(video, w, h, fps)
        try:
            for frame in stream:
                graded = lut[frame, channel]  # per-channel lookup
                yield ((graded.astype(np.uint16) * vignette) >> 8).astype(np.uint8)
        finally:
            stream.close()

    def _t2v(
        self, spec: GenerationSpec, w: int, h: int, fps: int, n: int, seed: int
    ) -> Iterator[np.ndarray]:
        scene = _Scene(spec.positive_prompt or "", w, h, seed)
        for i in range(n):
            yield scene.render(i / fps, i / max(1, n - 1))


# --------------------------------------------------------------------------------------------
# t2v scene
# --------------------------------------------------------------------------------------------


class _Scene:
    """A seeded parallax landscape: sky gradient, sun, three hill layers, drifting shapes."""

    def __init__(self, prompt: str, w: int, h: int, seed: int) -> None:
        import numpy as np
        from PIL import Image as PILImage
        from PIL import ImageDraw

        rng = np.random.default_rng([seed, 0x727])
        self.w, self.h = w, h
        hue = rng.uniform(0, 1)
        top = _hsv(hue, 0.55, 0.35)
        bottom = _hsv((hue + rng.uniform(0.05, 0.2)) % 1, 0.45, 0.95)
        pan_w = int(w * 1.6)  # wide panorama the camera pans across
        ys = np.linspace(0, 1, h)[:, None, None]
        sky = (np.array(top) * (1 - ys) + np.array(bottom) * ys).astype(np.uint8)
        self.sky = PILImage.fromarray(np.repeat(sky, w, axis=1))
        # sun / moon
        draw_sun = ImageDraw.Draw(self.sky)
        r = int(min(w, h) * rng.uniform(0.06, 0.11))
        sx, sy = int(w * rng.uniform(0.2, 0.8)), int(h * rng.uniform(0.15, 0.4))
        draw_sun.ellipse((sx - r, sy - r, sx + r, sy + r), fill=_hsv((hue + 0.5) % 1, 0.3, 1.0))
        # hill layers with parallax (far layers move slower)
        self.layers: list[tuple[Image.Image, float]] = []
        for depth in range(3):
            layer = PILImage.new("RGBA", (pan_w, h), (0, 0, 0, 0))
            d = ImageDraw.Draw(layer)
            base = h * (0.55 + 0.13 * depth)
            amp = h * (0.08 + 0.03 * depth)
            freqs = rng.uniform(1.0, 4.0, size=3)
            phases = rng.uniform(0, 2 * math.pi, size=3)
            xs = np.linspace(0, 2 * math.pi, 96)
            ridge = (
                base - amp * sum(np.sin(f * xs + p) for f, p in zip(freqs, phases, strict=True)) / 3
            )
            pts = [
                (float(x), float(y)) for x, y in zip(np.linspace(0, pan_w, 96), ridge, strict=True)
            ]
            color = _hsv((hue + 0.3 + 0.05 * depth) % 1, 0.5, 0.55 - 0.12 * depth)
            d.polygon([(0, h), *pts, (pan_w, h)], fill=(*color, 255))
            self.layers.append((layer, 0.08 + 0.12 * depth))
        # drifting shapes
        self.shapes = [
            (
                rng.uniform(0, 1), rng.uniform(0.05, 0.5), rng.uniform(-0.08, 0.08),
                int(min(w, h) * rng.uniform(0.015, 0.04)),
                _hsv(rng.uniform(0, 1), 0.3, 1.0),
            )
            for _ in range(int(rng.integers(4, 9)))
        ]  # fmt: skip
        # caption: rendered once, pasted every frame
        self.caption = _caption(prompt, w, h)

    def render(self, seconds: float, progress: float) -> np.ndarray:
        import numpy as np
        from PIL import ImageDraw

        frame = self.sky.copy()
        for layer, speed in self.layers:
            # whole-pixel offsets: a crop instead of a resample keeps a frame at a few ms
            off = round((layer.width - self.w) * min(1.0, progress * speed * 4))
            part = layer.crop((off, 0, off + self.w, self.h))
            frame.paste(part, (0, 0), part)
        draw = ImageDraw.Draw(frame)
        for x0, y0, vx, r, color in self.shapes:
            x = ((x0 + vx * seconds) % 1.2 - 0.1) * self.w
            y = (y0 + 0.02 * math.sin(seconds * 1.3 + x0 * 6)) * self.h
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        if self.caption is not None:
            img, pos = self.caption
            frame.paste(img, pos, img)
        return np.asarray(frame)


def _caption(prompt: str, w: int, h: int) -> tuple[Image.Image, tuple[int, int]] | None:
    """The prompt on a translucent bar (Pillow's default font), or None without a prompt."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    text = " ".join(prompt.split())
    if not text:
        return None
    size = max(12, h // 26)
    try:
        font: Any = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        font = ImageFont.load_default()
    chars = max(10, int(w * 0.9 / (size * 0.55)))
    lines = textwrap.wrap(text, width=chars)[:2]
    if len(textwrap.wrap(text, width=chars)) > 2:
        lines[-1] = lines[-1][: max(0, chars - 1)].rstrip() + "\u2026"
    line_h = int(size * 1.3)
    bar_h = line_h * len(lines) + size
    bar = PILImage.new("RGBA", (w, bar_h), (0, 0, 0, 140))
    draw = ImageDraw.Draw(bar)
    for i, line in enumerate(lines):
        draw.text((w * 0.05, size // 2 + i * line_h), line, font=font, fill=(255, 255, 255, 255))
    return bar, (0, h - bar_h - h // 20)


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(float(h), float(s), float(v))
    return round(r * 255), round(g * 255), round(b * 255)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _sample(amounts: list[float]) -> list[float]:
    """A few amounts spanning the path (the extremes bound the padding; ease is monotonic)."""
    if not amounts:
        return [0.0]
    lo, hi = min(amounts), max(amounts)
    return [lo + (hi - lo) * k / 8 for k in range(9)]


def _paced(
    make: Callable[[], Iterator[np.ndarray]],
    n: int,
    progress: ProgressFn,
    cancelled: CancelledFn,
) -> Iterator[np.ndarray]:
    """Wrap a frame generator: exactly ``n`` frames, progress after each, cancel between them."""
    if cancelled():
        raise CancelledError("taskCancelled", "the task was cancelled before rendering started")
    frames = make()
    try:
        for i in range(n):
            if cancelled():
                raise CancelledError("taskCancelled", f"the task was cancelled at frame {i} of {n}")
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
