"""Frames in and out of stored videos, and the one fit rule for putting an image into a frame.

* :func:`cover_fit` is the documented fit rule (scale to cover, centre-crop) that both engines
  use for input images, input video frames and generated frames of another size;
  :func:`cover_canvas` is its uncropped first half, for the preview engine's moving camera.
* :func:`decode_video` (PyAV frames) and :func:`iter_video_frames` (images) decode a video the
  safe way every decoder here should: the demuxer sniffed from the file's first bytes and FFmpeg
  limited to the file protocol (:data:`~reelserve.media.probe.SAFE_OPEN_OPTIONS`), so an "input
  video" that is really a playlist cannot make FFmpeg open anything else.
* :func:`first_frame` and :func:`first_frame_jpeg` give a video's first frame, as an image or as
  the JPEG cover that the 302-style and OpenAI-style dialects serve.

PyAV and Pillow are imported inside the functions: importing this module costs nothing, so the
server's import path stays light (``tests/test_imports.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from av.video.frame import VideoFrame
    from PIL import Image

__all__ = [
    "cover_canvas",
    "cover_fit",
    "decode_video",
    "first_frame",
    "first_frame_jpeg",
    "iter_video_frames",
]


def _cover_size(size: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    w0, h0 = size
    k = max(width / w0, height / h0)
    return max(width, round(w0 * k)), max(height, round(h0 * k))


def cover_canvas(image: Image.Image, width: int, height: int) -> tuple[Image.Image, int, int]:
    """``image`` (as RGB) scaled uniformly to cover ``width`` x ``height``, plus the offset
    ``(x, y)`` of the centred ``width`` x ``height`` crop in it.

    The scale is the smaller one that leaves no border; each side is rounded to whole pixels and
    never falls below the output's. LANCZOS resampling; an image already of the covering size is
    not resampled.
    """
    from PIL import Image as PILImage

    cw, ch = _cover_size(image.size, width, height)
    img = image.convert("RGB")
    scaled = img if (cw, ch) == img.size else img.resize((cw, ch), PILImage.Resampling.LANCZOS)
    return scaled, (cw - width) // 2, (ch - height) // 2


def cover_fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Fit ``image`` to exactly ``width`` x ``height`` by cover-cropping (the documented fit rule).

    Scale uniformly so the image covers the whole output (see :func:`cover_canvas`), then crop
    the centre. Equivalent to ``PIL.ImageOps.fit(image, size)`` up to resampling.
    """
    scaled, x0, y0 = cover_canvas(image, width, height)
    return scaled.crop((x0, y0, x0 + width, y0 + height))


def decode_video(path: Path) -> Generator[VideoFrame, None, None]:
    """Decode the first video stream of ``path`` frame by frame (PyAV frames, not converted).

    Opened with the demuxer sniffed from the file's first bytes (FFmpeg's own guess otherwise)
    and :data:`~reelserve.media.probe.SAFE_OPEN_OPTIONS`; decoding uses FFmpeg's threads. The
    container closes when the iterator is exhausted or closed. PyAV's errors pass through: call
    it on files that were probed (inputs) or written by the encoder (outputs). Callers that skip
    frames convert only the ones they keep (``frame.to_image()`` is the costly part).
    """
    import av

    from reelserve.media.inputs import sniff
    from reelserve.media.probe import SAFE_OPEN_OPTIONS

    with path.open("rb") as fh:
        kind = sniff(fh.read(64))
    fmt = kind[1] if kind and kind[0] == "video" else None
    with av.open(str(path), format=fmt, options=SAFE_OPEN_OPTIONS) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


def iter_video_frames(path: Path) -> Generator[Image.Image, None, None]:
    """The frames of ``path`` as Pillow images (see :func:`decode_video` for how it is opened)."""
    with contextlib.closing(decode_video(path)) as frames:
        for frame in frames:
            yield frame.to_image()


def first_frame(path: Path) -> Image.Image | None:
    """The first frame of the video at ``path`` as an RGB image, or None when it has none."""
    with contextlib.closing(decode_video(path)) as frames:
        frame = next(frames, None)
        return frame.to_image().convert("RGB") if frame is not None else None


def first_frame_jpeg(path: Path, quality: int = 85) -> bytes | None:
    """The first frame of the video at ``path`` as JPEG bytes, or None when it has no frame."""
    import io

    image = first_frame(path)
    if image is None:
        return None
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
