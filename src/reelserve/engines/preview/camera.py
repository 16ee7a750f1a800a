"""The preview engine's virtual camera: where it is at each frame, and what it sees.

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

A move is an end pose (:func:`camera_pose`) eased from rest (:func:`ease`); a
:class:`CameraCanvas` prepares an image once for a whole path and renders each pose as one
resampling of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from reelserve.errors import EngineError
from reelserve.media.frames import cover_canvas

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from reelserve.tasks import CameraControl

__all__ = [
    "PRESETS",
    "CameraCanvas",
    "CameraPose",
    "camera_pose",
    "ease",
    "homography",
    "sample_amounts",
]

# Full-scale amounts (|value| = 10) per axis, applied over the whole clip.
_SHIFT = 0.25  # fraction of width/height
_ROTATE_DEG = 12.0  # pan/tilt camera rotation
_ROLL_DEG = 20.0
_ZOOM = 1.5
_FOV_DEG = 60.0  # horizontal field of view of the virtual camera (for pan/tilt perspective)
_SUPERSAMPLE = 2  # moving-camera frames sample a canvas upsampled this much (see CameraCanvas)


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


def ease(t: float) -> float:
    """Smoothstep: starts and ends at rest, so moves and fades do not jerk."""
    t = min(1.0, max(0.0, t))
    return t * t * (3.0 - 2.0 * t)


def homography(pose: CameraPose, width: int, height: int) -> np.ndarray:
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
    :meth:`CameraCanvas._supersampled`), so a canvas coordinate ``x`` is ``S * x - (S - 1) / 2``.
    """
    import numpy as np

    s, off = float(_SUPERSAMPLE), -(_SUPERSAMPLE - 1) / 2.0
    out = np.array([[s, 0.0, off], [0.0, s, off], [0.0, 0.0, 1.0]]) @ m
    return out / out[2, 2]


def _map_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    import numpy as np

    homo = np.c_[pts, np.ones(len(pts))] @ m.T
    return homo[:, :2] / homo[:, 2:3]


class CameraCanvas:
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
            mapped = _map_points(homography(pose, width, height), corners)
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
        m = _to_supersampled(_translation(self.ox, self.oy) @ homography(pose, w, h))
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


def sample_amounts(amounts: list[float]) -> list[float]:
    """A few amounts spanning the path (the extremes bound the padding; ease is monotonic)."""
    if not amounts:
        return [0.0]
    lo, hi = min(amounts), max(amounts)
    return [lo + (hi - lo) * k / 8 for k in range(9)]
