"""What flows between the media layer and the engines: decoded inputs in, frames out.

:class:`ResolvedInputs` (with :class:`VideoInput`) is what :mod:`reelserve.media.inputs` hands an
engine; :class:`Clip` (with :class:`AudioSource`) is what an engine hands the one encoder
(:mod:`reelserve.media.encode`). They live here, in the media layer, because media sits below the
engines: engines import this module, and nothing under ``media/`` imports an engine. The Engine
protocol itself stays in :mod:`reelserve.engines.base`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "AudioSource",
    "CancelledFn",
    "Clip",
    "GeneratedAudio",
    "ProgressFn",
    "ResolvedInputs",
    "VideoInput",
]

ProgressFn = Callable[[float], None]
"""Called with the fraction done, 0.0-1.0, as work advances."""

CancelledFn = Callable[[], bool]
"""Returns True once the job was cancelled; engines check it between frames or steps."""


@dataclass(frozen=True)
class VideoInput:
    """A decoded-enough input video: a local file plus its probed facts."""

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool


@dataclass(frozen=True)
class ResolvedInputs:
    """The spec's media inputs, fetched and decoded (RGB PIL images, probed video files)."""

    first_frame: Image.Image | None = None
    last_frame: Image.Image | None = None
    reference_images: list[Image.Image] = field(default_factory=list)
    reference_videos: list[VideoInput] = field(default_factory=list)
    input_video: VideoInput | None = None


@dataclass(frozen=True)
class AudioSource:
    """Audio to carry into the output: the audio stream of ``path`` starting at ``start`` seconds.

    The encoder trims it to the clip's length.
    """

    path: Path
    start: float = 0.0


@dataclass(frozen=True)
class GeneratedAudio:
    """Audio an engine generated with the video (LTX-2): raw samples, not a file.

    ``samples`` is a float32 array of shape ``(channels, n)`` (1 or 2 channels, values in -1..1)
    at ``sample_rate`` Hz. Models do not stop exactly on the last frame, so ``n`` may run a
    little past (or short of) the clip: the encoder trims (or pads with silence) sample-exactly to
    ``num_frames / fps`` seconds.
    """

    samples: np.ndarray
    sample_rate: int


@dataclass
class Clip:
    """Frames produced by an engine, consumed once by the encoder.

    ``frames`` yields exactly ``num_frames`` RGB ``uint8`` arrays of shape ``(height, width, 3)``.
    Audio comes from at most one of ``audio`` (an input file's sound, ``keepOriginalSound``) and
    ``generated_audio`` (samples the model made, ``sound``); without either the file is silent.
    """

    frames: Iterator[np.ndarray]
    num_frames: int
    width: int
    height: int
    fps: int
    audio: AudioSource | None = None
    generated_audio: GeneratedAudio | None = None
