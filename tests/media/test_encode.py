"""The one encoder: exact frames and fps per format, quality -> size monotonic, audio trimmed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from media.media_helpers import audio_duration, make_image, make_video
from reelserve.errors import CANCELLED_CODE, CancelledError, EngineError
from reelserve.media.clip import AudioSource, Clip
from reelserve.media.encode import content_type_for, crf_for, encode_clip, extension_for
from reelserve.media.probe import probe
from reelserve.tasks import OutputFormat

BASE = np.asarray(make_image(400, 180, seed=5))


def frames(n: int, w: int = 320, h: int = 180) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.ascontiguousarray(BASE[:h, i : i + w])


def clip(n: int = 24, fps: int = 24, audio: AudioSource | None = None) -> Clip:
    return Clip(frames=frames(n), num_frames=n, width=320, height=180, fps=fps, audio=audio)


@pytest.mark.parametrize(
    ("fmt", "prores", "container", "codec", "pix_fmt"),
    [
        (OutputFormat.MP4, False, "mp4", "h264", "yuv420p"),
        (OutputFormat.WEBM, False, "webm", "vp9", "yuv420p"),
        (OutputFormat.MOV, False, "mov", "h264", "yuv420p"),
        (OutputFormat.MOV, True, "mov", "prores", "yuv422p10le"),
    ],
)
@pytest.mark.parametrize("fps", [24, 30])
def test_exact_frames_fps_codec_container(
    tmp_path: Path,
    fmt: OutputFormat,
    prores: bool,
    container: str,
    codec: str,
    pix_fmt: str,
    fps: int,
) -> None:
    out = encode_clip(
        clip(n=fps + 7, fps=fps), tmp_path / f"o.{extension_for(fmt)}", output_format=fmt,
        quality=80, prores_mov=prores,
    )  # fmt: skip
    info = probe(out)
    assert (info.container, info.video_codec, info.pix_fmt) == (container, codec, pix_fmt)
    assert (info.width, info.height, info.fps) == (320, 180, float(fps))
    assert info.num_frames == fps + 7 == probe(out, decode=True).num_frames
    assert abs(info.duration - (fps + 7) / fps) < 0.05
    assert not info.has_audio


def test_mp4_is_faststart(tmp_path: Path) -> None:
    data = encode_clip(
        clip(), tmp_path / "f.mp4", output_format=OutputFormat.MP4, quality=60
    ).read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_names_and_types() -> None:
    assert [content_type_for(f) for f in OutputFormat] == [
        "video/mp4",
        "video/webm",
        "video/quicktime",
    ]
    assert [extension_for(f) for f in OutputFormat] == ["mp4", "webm", "mov"]


@pytest.mark.parametrize("fmt", [OutputFormat.MP4, OutputFormat.WEBM])
def test_crf_is_monotonic(fmt: OutputFormat) -> None:
    crfs = [crf_for(fmt, q) for q in range(20, 100)]
    assert crfs == sorted(crfs, reverse=True) and crfs[0] > crfs[-1]
    with pytest.raises(EngineError) as err:
        crf_for(fmt, 19)
    assert err.value.parameter == "outputQuality"


@pytest.mark.parametrize("fmt", [OutputFormat.MP4, OutputFormat.WEBM, OutputFormat.MOV])
def test_higher_quality_never_gives_a_smaller_file(tmp_path: Path, fmt: OutputFormat) -> None:
    sizes = [
        encode_clip(clip(), tmp_path / f"q{q}.{extension_for(fmt)}", output_format=fmt, quality=q)
        .stat()
        .st_size
        for q in (20, 35, 50, 65, 80, 95, 99)
    ]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1], sizes


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [(OutputFormat.MP4, "aac"), (OutputFormat.WEBM, "opus"), (OutputFormat.MOV, "aac")],
)
def test_audio_is_trimmed_to_the_clip(tmp_path: Path, fmt: OutputFormat, codec: str) -> None:
    src = make_video(tmp_path / "src.mp4", frames=12, audio_seconds=4.0)
    out = encode_clip(
        clip(n=36, audio=AudioSource(src, start=1.0)), tmp_path / f"a.{extension_for(fmt)}",
        output_format=fmt, quality=70,
    )  # fmt: skip
    info = probe(out)
    assert info.has_audio and info.audio_codec == codec
    assert 1.45 <= audio_duration(out) <= 1.6  # 36 frames at 24 fps = 1.5 s, not the source's 4 s


def test_audio_source_without_audio_gives_no_track(tmp_path: Path) -> None:
    src = make_video(tmp_path / "silent.mp4", frames=12)
    out = encode_clip(
        clip(audio=AudioSource(src)), tmp_path / "s.mp4", output_format=OutputFormat.MP4, quality=70
    )
    assert not probe(out).has_audio


def test_short_clip_and_bad_frames_are_engine_errors(tmp_path: Path) -> None:
    short = Clip(frames=frames(5), num_frames=10, width=320, height=180, fps=24)
    with pytest.raises(EngineError, match="yielded 5 frames"):
        encode_clip(short, tmp_path / "x.mp4", output_format=OutputFormat.MP4, quality=70)
    assert not (tmp_path / "x.mp4").exists()
    wrong = Clip(frames=frames(5, w=300), num_frames=5, width=320, height=180, fps=24)
    with pytest.raises(EngineError) as err:
        encode_clip(wrong, tmp_path / "y.mp4", output_format=OutputFormat.MP4, quality=70)
    assert err.value.code == "invalidFrame"
    odd = Clip(frames=frames(5), num_frames=5, width=321, height=180, fps=24)
    with pytest.raises(EngineError) as err:
        encode_clip(odd, tmp_path / "z.mp4", output_format=OutputFormat.MP4, quality=70)
    assert err.value.code == "invalidOutputSize"


def test_cancel_removes_the_partial_file(tmp_path: Path) -> None:
    ticks = iter(range(100))
    with pytest.raises(CancelledError) as err:
        encode_clip(
            clip(n=48), tmp_path / "c.mp4", output_format=OutputFormat.MP4, quality=70,
            cancelled=lambda: next(ticks) > 3,
        )  # fmt: skip
    assert not (tmp_path / "c.mp4").exists()
    assert err.value.code == CANCELLED_CODE  # the one code every layer and dialect uses


def test_progress_reaches_one(tmp_path: Path) -> None:
    seen: list[float] = []
    encode_clip(
        clip(n=10),
        tmp_path / "p.webm",
        output_format=OutputFormat.WEBM,
        quality=50,
        progress=seen.append,
    )
    assert seen == [pytest.approx((i + 1) / 10) for i in range(10)]
