"""The Engine protocol: turn a resolved :class:`GenerationSpec` plus decoded inputs into frames.

Engines never encode, store or deliver; they return a :class:`~reelserve.media.clip.Clip` whose
frames the one encoder (:mod:`reelserve.media.encode`) consumes as a stream, so a 10 s 1080p clip
never has to sit in memory whole. Heavy imports (numpy is fine; torch/diffusers are not) stay out of this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

# The data an engine takes and returns lives in the media layer (below the engines); it is part of
# this contract, so it stays importable from here too.
from reelserve.media.clip import (
    AudioSource,
    CancelledFn,
    Clip,
    ProgressFn,
    ResolvedInputs,
    VideoInput,
)

if TYPE_CHECKING:
    from reelserve.tasks import GenerationSpec

__all__ = [
    "AudioSource",
    "BatchEngine",
    "CancelledFn",
    "Clip",
    "Engine",
    "ProgressFn",
    "ResolvedInputs",
    "VideoInput",
]


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
