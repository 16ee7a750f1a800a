"""Test media made on the spot (numpy, Pillow, PyAV) and measurements on decoded frames.

Imported by ``tests/media`` and ``tests/engines`` tests as ``media.media_helpers`` (``tests/`` is
on ``sys.path`` through the root conftest). No binary fixtures: everything is generated.
"""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth but textured RGB image: soft noise, a gradient and a few solid shapes.

    Texture makes shifts measurable (phase correlation); smoothness keeps encode PSNR high.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 24), max(2, width // 24), 3)) * 255
    base = Image.fromarray(coarse.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    arr = np.asarray(base, dtype=float)
    ys = np.linspace(0, 1, height)[:, None, None]
    arr = arr * 0.7 + ys * 60
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(min(width, height) // 20, min(width, height) // 8))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
    return img.filter(ImageFilter.GaussianBlur(1.0))


def image_bytes(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    """Encode ``img`` in ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of ``width`` x ``height`` zeros: tiny on disk, huge when decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(comp.compress(row * (height % 1000)))
    parts.append(comp.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def make_video(
    path: Path,
    *,
    width: int = 320,
    height: int = 320,
    fps: int = 24,
    frames: int = 24,
    audio_seconds: float | None = None,
    seed: int = 0,
) -> Path:
    """An H.264 MP4 of a moving textured image, with a 440 Hz tone when ``audio_seconds``."""
    base = np.asarray(make_image(width + frames * 2, height, seed))
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        if audio_seconds:
            as_ = out.add_stream("aac", rate=44100)
            as_.layout = "stereo"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(base[:, i * 2 : i * 2 + width]), format="rgb24"
            )
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if audio_seconds:
            n = int(44100 * audio_seconds)
            t = np.arange(n) / 44100
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            data = np.stack([tone, tone])
            for pos in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(data[:, pos : pos + 1024]), format="fltp", layout="stereo"
                )
                af.sample_rate = 44100
                af.pts = pos
                for pkt in as_.encode(af):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)
    return path


def decode_frames(path: Path) -> list[np.ndarray]:
    """All video frames of ``path`` as RGB arrays."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_duration(path: Path) -> float:
    """Seconds of decoded audio in ``path`` (0.0 when it has no audio stream)."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0.0
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        return samples / stream.codec_context.sample_rate


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical arrays)."""
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def gray(a: np.ndarray) -> np.ndarray:
    return a.astype(float) @ np.array([0.299, 0.587, 0.114])


def phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """How far the content moved from frame ``a`` to frame ``b``: ``(dx, dy)`` in pixels.

    +dx: moved right; +dy: moved down (image coordinates).
    """
    ga, gb = gray(a), gray(b)
    h, w = ga.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2((ga - ga.mean()) * win), np.fft.fft2((gb - gb.mean()) * win)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    y, x = np.unravel_index(np.argmax(corr), corr.shape)
    dx = x if x <= w // 2 else x - w
    dy = y if y <= h // 2 else y - h
    return float(dx), float(dy)


def best_scale(a: np.ndarray, b: np.ndarray) -> float:
    """Magnification of ``b`` relative to ``a`` about the centre (searched, centre region)."""
    h, w = a.shape[:2]
    img = Image.fromarray(a)
    best, best_s = -1.0, 1.0
    cy, cx, rh, rw = h // 2, w // 2, h // 4, w // 4
    target = gray(b)[cy - rh : cy + rh, cx - rw : cx + rw]
    for s in np.linspace(0.6, 1.6, 51):
        scaled = img.transform(
            (w, h),
            Image.Transform.AFFINE,
            (1 / s, 0, w / 2 - w / (2 * s), 0, 1 / s, h / 2 - h / (2 * s)),
            Image.Resampling.BILINEAR,
        )
        cand = gray(np.asarray(scaled))[cy - rh : cy + rh, cx - rw : cx + rw]
        score = psnr(cand, target)
        if score > best:
            best, best_s = score, float(s)
    return best_s


def best_rotation(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation in degrees (counter-clockwise positive) that best maps ``a`` onto ``b``."""
    h, w = a.shape[:2]
    img = Image.fromarray(a)
    cy, cx, rh, rw = h // 2, w // 2, h // 4, w // 4
    target = gray(b)[cy - rh : cy + rh, cx - rw : cx + rw]
    best, best_angle = -1.0, 0.0
    for angle in np.linspace(-25, 25, 101):
        rotated = np.asarray(img.rotate(float(angle), resample=Image.Resampling.BILINEAR))
        score = psnr(gray(rotated)[cy - rh : cy + rh, cx - rw : cx + rw], target)
        if score > best:
            best, best_angle = score, float(angle)
    return best_angle
