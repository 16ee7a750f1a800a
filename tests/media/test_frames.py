"""The one fit rule and the safe first-frame / frame decoding shared by engines and dialects."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from media.media_helpers import decode_frames, make_image, make_video, psnr
from reelserve.media.frames import (
    cover_canvas,
    cover_fit,
    first_frame,
    first_frame_jpeg,
    iter_video_frames,
)


def test_fit_image_cover_crops_to_exact_size() -> None:
    image = Image.new("RGB", (400, 100), (0, 0, 255))
    image.paste((255, 0, 0), (150, 0, 250, 100))  # a red band in the middle
    fitted = cover_fit(image, 64, 64)
    assert fitted.size == (64, 64)
    assert np.asarray(fitted)[32, 32].tolist()[0] > 200  # the centre survives the crop


def test_cover_fit_matches_imageops_fit_and_the_canvas_crop() -> None:
    image = make_image(333, 200, seed=3)
    fitted = cover_fit(image, 160, 160)
    expected = np.asarray(ImageOps.fit(image, (160, 160), Image.Resampling.BICUBIC))
    assert psnr(np.asarray(fitted), expected) >= 30
    scaled, x0, y0 = cover_canvas(image, 160, 160)
    assert scaled.size == (266, 160) and (x0, y0) == (53, 0)
    assert scaled.crop((x0, y0, x0 + 160, y0 + 160)).tobytes() == fitted.tobytes()


def test_frames_and_first_frame_match_a_plain_decode(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", width=96, height=64, frames=6)
    reference = decode_frames(video)
    frames = [np.asarray(im.convert("RGB")) for im in iter_video_frames(video)]
    assert len(frames) == len(reference) == 6
    assert all(np.array_equal(a, b) for a, b in zip(frames, reference, strict=True))
    first = first_frame(video)
    assert first is not None and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), reference[0])


def test_first_frame_jpeg_is_the_first_frame(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", width=96, height=64, frames=4)
    data = first_frame_jpeg(video)
    assert data is not None and data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (96, 64)
        assert psnr(np.asarray(img.convert("RGB")), decode_frames(video)[0]) >= 30
