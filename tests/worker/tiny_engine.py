"""A tiny real engine for tests: flat frames, cheap to render and to encode.

Servers started by tests load it with ``REELSERVE_ENGINE_SELECTOR=tiny_engine:engine_selector``
(``tests/worker`` on ``PYTHONPATH``). ``behaviour`` switches let worker tests make it fail.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from reelserve.engines.base import Engine
from reelserve.errors import CANCELLED_CODE, CancelledError
from reelserve.media.clip import Clip, ResolvedInputs
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
                    raise CancelledError(CANCELLED_CODE, "cancelled")
                if self.on_frame is not None:
                    self.on_frame(i)
                progress((i + 1) / n)
                yield frame

        return Clip(frames=frames(), num_frames=n, width=spec.width, height=spec.height, fps=spec.fps)


class TinyBatchEngine(TinyEngine):
    """A :class:`~reelserve.engines.base.BatchEngine`: ``batches`` lists each group of seeds."""

    def __init__(self, batch: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.batches: list[list[int]] = []

    def batch_size(self, spec: GenerationSpec) -> int:
        return self.batch

    def generate_many(self, spec: GenerationSpec, inputs: ResolvedInputs, seeds: list[int],
                      progress: Callable[[float], None], cancelled: Callable[[], bool]) -> list[Clip]:
        self.batches.append(list(seeds))
        progress(1.0)
        return [self.generate(spec, inputs, seed, lambda f: None, cancelled) for seed in seeds]


class ResidentSelector:
    """A selector with residency, like the engine registry: the model of the job it last served
    counts as loaded. ``served`` lists the models of the jobs in the order they were rendered."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or TinyEngine()
        self.loaded: str | None = None
        self.served: list[str] = []

    def __call__(self, spec: GenerationSpec) -> Engine:
        self.loaded = spec.model
        self.served.append(spec.model)
        return self.engine

    def preferred_models(self) -> set[str]:
        return {self.loaded} if self.loaded is not None else set()


def engine_selector(settings: Any) -> Callable[[GenerationSpec], Engine]:
    """The selector factory named by REELSERVE_ENGINE_SELECTOR."""
    engine = TinyEngine()
    return lambda spec: engine


def slow_engine_selector(settings: Any) -> Callable[[GenerationSpec], Engine]:
    """Like :func:`engine_selector`, but each frame takes 20 ms (3 s for 5 s at 30 fps): long
    enough to catch a job mid-run (kill -9 tests), still cheap to render."""
    engine = TinyEngine(on_frame=lambda _index: time.sleep(0.02))
    return lambda spec: engine


class RecordingEngine(TinyEngine):
    """A slow :class:`TinyEngine` that records which process renders each result, and what
    ``CUDA_VISIBLE_DEVICES`` that process saw, in ``<runs>/<taskUUID>.<seed>.<pid>.json``
    (written when rendering starts, so a test can kill that process mid-job)."""

    def __init__(self, runs: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = runs

    def generate(self, spec: GenerationSpec, inputs: ResolvedInputs, seed: int,
                 progress: Callable[[float], None], cancelled: Callable[[], bool]) -> Clip:
        record = {"task_uuid": spec.task_uuid, "seed": seed, "pid": os.getpid(),
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        path = self.runs / f"{spec.task_uuid}.{seed}.{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)  # readers never see half a file
        return super().generate(spec, inputs, seed, progress, cancelled)


def recording_engine_selector(settings: Any) -> Callable[[GenerationSpec], Engine]:
    """Like :func:`slow_engine_selector`, recording each render in ``<data dir>/engine-runs``
    (see :class:`RecordingEngine`)."""
    runs = Path(settings.data_dir) / "engine-runs"
    runs.mkdir(parents=True, exist_ok=True)
    engine = RecordingEngine(runs, on_frame=lambda _index: time.sleep(0.02))
    return lambda spec: engine
