"""Frame sources of the preview engine that need no camera: the seeded t2v landscape,
input videos re-timed to the output rate, and the cross-fade that joins two sources."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from reelserve.errors import EngineError
from reelserve.media.frames import cover_fit, decode_video

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from reelserve.media.clip import VideoInput

__all__ = ["Scene", "blend", "video_frames"]


def blend(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
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


def video_frames(
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


class Scene:
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
