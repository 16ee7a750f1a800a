"""A tiny real engine for tests: flat frames, cheap to render and to encode.

Servers started by tests load it with ``REELSERVE_ENGINE_SELECTOR=tiny_engine:engine_selector``
(``tests/worker`` on ``PYTHONPATH``). ``behaviour`` switches let worker tests make it fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from reelserve.engines.base import Clip, Engine, ResolvedInputs
from reelserve.errors import CancelledError
from reelserve.tasks import GenerationSpec


class TinyEngine:
    """Renders ``num_frames`` flat gray frames; ``fail`` raises it from ``generate``."""

    name = "tiny"

    def __init__(self, fail: BaseException | None = None, on_frame: Callable[[int], None] | None = None) -> None:
        self.fail = fail
        self.on_frame = on_frame
        self.calls: list[int] = []

    def supports(self, spec: GenerationSpec) -> bool:
        return True

    def generate(self, spec: GenerationSpec, inputs: ResolvedInputs, seed: int,
                 progress: Callable[[float], None], cancelled: Callable[[], bool]) -> Clip:
        self.calls.append(seed)
        if self.fail is not None:
            raise self.fail
        assert spec.width and spec.height
        n = spec.num_frames
        frame = np.full((spec.height, spec.width, 3), seed % 200, dtype=np.uint8)

        def frames() -> Iterator[np.ndarray]:
            for i in range(n):
                if cancelled():
                    raise CancelledError("taskCancelled", "cancelled")
                if self.on_frame is not None:
                    self.on_frame(i)
                progress((i + 1) / n)
                yield frame

        return Clip(frames=frames(), num_frames=n, width=spec.width, height=spec.height, fps=spec.fps)


def engine_selector(settings: Any) -> Callable[[GenerationSpec], Engine]:
    """The selector factory named by REELSERVE_ENGINE_SELECTOR."""
    engine = TinyEngine()
    return lambda spec: engine
