"""The encoder muxes audio an engine generated (LTX-2): resampled, trimmed or padded to the clip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from media.media_helpers import audio_duration
from reelserve.errors import EngineError
from reelserve.media.clip import Clip, GeneratedAudio
from reelserve.media.encode import encode_clip, extension_for
from reelserve.media.probe import probe
from reelserve.tasks import OutputFormat


def _frames(n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield np.full((90, 160, 3), (i * 7) % 255, np.uint8)


def _tone(seconds: float, rate: int, channels: int = 2, hz: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * hz * (c + 1) * t) for c in range(channels)]).astype(np.float32)


def _decoded(path: Path) -> tuple[int, np.ndarray]:
    """(sample rate, samples as (channels, n) float) of the file's audio stream."""
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        rate = stream.codec_context.sample_rate
        for frame in c.decode(stream):
            arr = frame.to_ndarray()
            channels = len(frame.layout.channels)
            # packed formats come as (1, n * channels)
            chunks.append(arr if frame.format.is_planar else arr.reshape(-1, channels).T)
    samples = np.concatenate(chunks, axis=1)
    if samples.dtype == np.int16:
        return rate, samples / 32768.0
    return rate, samples.astype(np.float64)


@pytest.mark.parametrize(
    ("fmt", "codec", "prores"),
    [
        (OutputFormat.MP4, "aac", False),
        (OutputFormat.WEBM, "opus", False),
        (OutputFormat.MOV, "aac", False),
        (OutputFormat.MOV, "pcm_s16le", True),
    ],
)
def test_generated_audio_is_trimmed_to_the_clip(
    tmp_path: Path, fmt: OutputFormat, codec: str, prores: bool
) -> None:
    # LTX-2's audio runs a little past the clip (5.01 s for 5 s): 2 s clip, 2.04 s of 24 kHz audio.
    clip = Clip(_frames(48), 48, 160, 90, 24, generated_audio=GeneratedAudio(_tone(2.04, 24000), 24000))
    out = encode_clip(clip, tmp_path / f"g.{extension_for(fmt)}", output_format=fmt, quality=70,
                      prores_mov=prores)
    info = probe(out)
    assert info.has_audio and info.audio_codec == codec
    assert info.num_frames == 48
    if prores:
        # PCM has no encoder delay or padding: sample-exact, 2 s at 48 kHz.
        rate, samples = _decoded(out)
        assert (rate, samples.shape) == (48000, (2, 96000))
        # the tone survived resampling (a 440 Hz sine on the left channel)
        spectrum = np.abs(np.fft.rfft(samples[0]))
        assert abs(np.argmax(spectrum) * rate / samples.shape[1] - 440.0) < 2.0
    else:
        # Lossy codecs add at most one frame of priming/padding around the exact 2 s.
        assert 1.99 <= audio_duration(out) <= 2.03


def test_short_generated_audio_is_padded_with_silence(tmp_path: Path) -> None:
    clip = Clip(_frames(24), 24, 160, 90, 24, generated_audio=GeneratedAudio(_tone(0.5, 16000, 1), 16000))
    out = encode_clip(clip, tmp_path / "p.mov", output_format=OutputFormat.MOV, quality=70,
                      prores_mov=True)
    rate, samples = _decoded(out)
    assert (rate, samples.shape) == (48000, (1, 48000))
    assert np.abs(samples[0, :20000]).max() > 0.1  # the tone
    assert np.abs(samples[0, 30000:]).max() == 0.0  # then silence up to the clip's end


def test_malformed_generated_audio_is_an_engine_error(tmp_path: Path) -> None:
    bad = GeneratedAudio(np.zeros((4, 100), np.float32), 16000)  # four channels
    with pytest.raises(EngineError) as info:
        encode_clip(Clip(_frames(4), 4, 160, 90, 24, generated_audio=bad), tmp_path / "b.mp4",
                    output_format=OutputFormat.MP4, quality=70)
    assert info.value.code == "invalidClip"
    assert not (tmp_path / "b.mp4").exists()
