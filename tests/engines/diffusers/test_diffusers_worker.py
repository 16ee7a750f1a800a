"""The worker with the engine registry on tiny diffusers pipelines: batched seeds, claim order.

Real SQLite store, real artifact store, real encoder; every clip comes out of a tiny random
pipeline loaded through the profile code. The transformer's forward hook counts the calls and the
batch each one carried.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.engines.registry import EngineRegistry
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.media.probe import probe
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus, Result
from reelserve.worker.loop import Worker

A, B = "klingai:1@1", "klingai:1@2"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteJobStore]:
    opened = SQLiteJobStore(tmp_path / "jobs.db")
    yield opened
    opened.close()


def _registry(tmp_path: Path, profiles: Path) -> tuple[Settings, EngineRegistry]:
    settings = Settings(data_dir=tmp_path, profiles=profiles, diffusers_device="cpu",
                        preview_fallback=False)
    return settings, EngineRegistry.from_settings(settings)


def _submit(store: SQLiteJobStore, model: str = A, **extra: object) -> Job:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": model,
            "positivePrompt": "a cat dances on the moon", "width": 720, "height": 720,
            "duration": 5, **extra}
    spec = validate(parse_video_inference(task))
    return store.create(Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o",
                            request=task, spec=spec))


def _count_transformer_batches(registry: EngineRegistry, model: str) -> list[int]:
    """Load ``model``'s t2v pipeline and record the batch size of every transformer call."""
    engine = registry.diffusers
    assert engine is not None
    engine.load(model, "t2v")
    entry = engine.profiles.get(model, "t2v")
    assert entry is not None
    batches: list[int] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        batches.append(int(kwargs["hidden_states"].shape[0]))

    with engine._use(entry.profile) as loaded:
        loaded.pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    return batches


@pytest.mark.slow
def test_worker_renders_several_results_in_one_batched_call(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], tmp_path: Path,
    store: SQLiteJobStore,
) -> None:
    profiles = write_profiles([(A, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {"batch": 2})])
    settings, registry = _registry(tmp_path, profiles)
    batches = _count_transformer_batches(registry, A)
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    job = _submit(store, numberResults=2, seed=5)
    assert Worker(settings, store, artifacts, registry).run_once()

    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED, done and done.error
    assert [r.seed for r in done.results] == [5, 6]
    files = []
    for result in done.results:
        path = artifacts.local_path(result.artifact_key)
        assert path is not None
        facts = probe(path)
        assert (facts.width, facts.height, facts.num_frames) == (720, 720, 150)
        assert facts.fps == pytest.approx(30)
        files.append(path.read_bytes())
    assert files[0] != files[1]  # two seeds, two different videos
    # One pipeline call: 2 steps x CFG (cond + uncond), each carrying both seeds.
    assert batches == [2, 2, 2, 2]


@pytest.mark.slow
def test_results_recorded_before_a_crash_are_not_rendered_again(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], tmp_path: Path,
    store: SQLiteJobStore,
) -> None:
    profiles = write_profiles([(A, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {"batch": 2})])
    settings, registry = _registry(tmp_path, profiles)
    batches = _count_transformer_batches(registry, A)
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    job = _submit(store, numberResults=2, seed=5)
    # A worker recorded result 0, then died.
    assert store.claim("dead", 30) is not None
    kept = Result(index=0, video_uuid=str(uuid.uuid4()), seed=5, artifact_key="outputs/kept",
                  content_type="video/mp4", size_bytes=1, width=720, height=720, fps=30,
                  num_frames=150, duration=5, cost=0.1848)
    assert store.add_result(job.id, "dead", kept)
    store.fail(job.id, "dead", {"code": "internalError", "message": "crash"}, retry=True)

    assert Worker(settings, store, artifacts, registry).run_once()
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert done.results[0].video_uuid == kept.video_uuid and done.results[1].seed == 6
    assert batches == [1, 1, 1, 1]  # only seed 6 was rendered


@pytest.mark.slow
def test_worker_claims_the_job_for_the_loaded_model_first(
    tiny_weights: dict[str, Path], write_profiles: Callable[..., Path], tmp_path: Path,
    store: SQLiteJobStore,
) -> None:
    profiles = write_profiles([
        (A, "t2v", "wan-t2v", tiny_weights["wan-t2v"], {}),
        (B, "t2v", "ltx-condition", tiny_weights["ltx-condition"], {}),
    ])
    settings, registry = _registry(tmp_path, profiles)
    assert registry.diffusers is not None
    registry.diffusers.load(B, "t2v")
    assert registry.preferred_models() == {B}
    older, newer = _submit(store, A), _submit(store, B)

    worker = Worker(settings, store, artifacts=LocalArtifactStore(tmp_path / "artifacts"),
                    select_engine=registry)
    assert worker.run_once()
    got_newer, got_older = store.get(newer.id), store.get(older.id)
    assert got_newer is not None and got_newer.status is JobStatus.SUCCEEDED
    assert got_older is not None and got_older.status is JobStatus.QUEUED
    assert worker.run_once()
    assert store.get(older.id).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
