"""The Engine protocol: turn a resolved :class:`GenerationSpec` plus decoded inputs into frames.

Engines never encode, store or deliver; they return a :class:`Clip` whose frames the one encoder
(:mod:`reelserve.media.encode`) consumes as a stream, so a 10 s 1080p clip never has to sit in
memory whole. Heavy imports (numpy is fine; torch/diffusers are not) stay out of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from reelserve.tasks import GenerationSpec

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


@dataclass
class Clip:
    """Frames produced by an engine, consumed once by the encoder.

    ``frames`` yields exactly ``num_frames`` RGB ``uint8`` arrays of shape ``(height, width, 3)``.
    """

    frames: Iterator[np.ndarray]
    num_frames: int
    width: int
    height: int
    fps: int
    audio: AudioSource | None = None


@runtime_checkable
class Engine(Protocol):
    """Something that renders clips. Implementations: preview (CPU), diffusers (GPU)."""

    name: str

    def supports(self, spec: GenerationSpec) -> bool:
        """Whether this engine can render ``spec`` (model and workflow) on this install."""
        ...

    def generate(
        self,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seed: int,
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> Clip:
        """Render one result of ``spec`` with ``seed``.

        ``spec`` is resolved (size and duration known). Raise
        :class:`reelserve.errors.CancelledError` when ``cancelled()`` turns true, and
        :class:`reelserve.errors.EngineError` for anything the engine cannot do.
        """
        ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine that can render several seeds of one spec in a single pass (optional).

    The worker checks for it with ``isinstance`` and hands it the missing seeds in groups of
    :meth:`batch_size`, recording each group's results before rendering the next, so a crash
    loses at most one group's work. Engines without it get one :meth:`Engine.generate` per seed.
    """

    def batch_size(self, spec: GenerationSpec) -> int:
        """How many seeds of ``spec`` to render together (1 when batching does not pay)."""
        ...

    def generate_many(
        self,
        spec: GenerationSpec,
        inputs: ResolvedInputs,
        seeds: list[int],
        progress: ProgressFn,
        cancelled: CancelledFn,
    ) -> list[Clip]:
        """Render one clip per seed, in the order of ``seeds``.

        ``progress`` covers all of them together. Errors and cancellation as in
        :meth:`Engine.generate`.
        """
        ...
