"""A bad profile stops `reelserve serve|worker` at start; readiness and --preload of the worker.

The CLI tests run the real ``python -m reelserve`` in a subprocess; the executor tests use a real
SQLite store, real artifact store and the engine registry on tiny random pipelines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.validate import validate
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.engines.registry import EngineRegistry
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus
from reelserve.worker.executors import ThreadExecutor
from reelserve.worker.readiness import ReadyState
from reelserve_testing import free_port

MODEL = "klingai:1@1"


def _profile(tmp_path: Path, weights: Path, extra: str = "") -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(
        f'[models."{MODEL}".t2v]\npipeline = "wan-t2v"\nweights = "{weights}"\nsteps = 2\n'
        f'guidance = 3.0\nnative_size = "32x32"\nnative_fps = 4\n{extra}\n', encoding="utf-8")
    return path


def _run_cli(args: Sequence[str], profiles: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
    env.update({"REELSERVE_PROFILES": str(profiles), "REELSERVE_DIFFUSERS_DEVICE": "cpu"})
    return subprocess.run([sys.executable, "-m", "reelserve", *args, "--data-dir", str(data_dir)],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [
    ["serve", "--port", "PORT"],
    ["worker"],
    ["worker", "--processes", "2"],
])
def test_bad_profile_stops_serve_and_worker_at_start(
    tmp_path: Path, tiny_weights: dict[str, Path], command: list[str]
) -> None:
    profiles = _profile(tmp_path, tiny_weights["wan-t2v"], "stepz = 4")
    args = [str(free_port()) if a == "PORT" else a for a in command]
    done = _run_cli(args, profiles, tmp_path / "data")
    assert done.returncode != 0
    err = done.stderr
    assert "invalidProfile" in err
    assert str(profiles) in err  # the file
    assert f'models."{MODEL}".t2v' in err  # the entry
    assert "unknown key 'stepz'" in err  # the key
    assert "allowed keys:" in err and "'steps'" in err  # what is allowed
    assert "Traceback" not in err


def test_bad_option_stops_serve_naming_the_option(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    profiles = _profile(tmp_path, tiny_weights["wan-t2v"], 'attention_backend = "flash3"')
    done = _run_cli(["serve", "--port", str(free_port())], profiles, tmp_path / "data")
    assert done.returncode != 0
    assert "attention_backend: unknown backend 'flash3'" in done.stderr
    assert "'_native_flash'" in done.stderr


def test_preload_of_an_unknown_id_stops_the_worker(tmp_path: Path, tiny_weights: dict[str, Path]) -> None:
    profiles = _profile(tmp_path, tiny_weights["wan-t2v"])
    done = _run_cli(["worker", "--preload", "klingai:9@9"], profiles, tmp_path / "data")
    assert done.returncode != 0
    assert "--preload klingai:9@9" in done.stderr and MODEL in done.stderr


# ------------------------------------------------------------------ readiness and preload


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteJobStore]:
    opened = SQLiteJobStore(tmp_path / "jobs.db")
    yield opened
    opened.close()


def _submit(store: SQLiteJobStore) -> Job:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": MODEL,
            "positivePrompt": "a cat dances on the moon", "width": 720, "height": 720, "duration": 5}
    spec = validate(parse_video_inference(task))
    return store.create(Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o",
                            request=task, spec=spec))


def _wait_terminal(store: SQLiteJobStore, job_id: str, timeout: float = 240.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.get(job_id)
        assert job is not None
        if job.status.is_terminal:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status} after {timeout} s")


class _RecordingRegistry(EngineRegistry):
    """The real registry, noting what happened in which order (and the readiness then)."""

    events: list[tuple[str, object]]
    executor: ThreadExecutor | None = None

    def preload(self, models: Sequence[str]) -> list[str]:
        assert self.executor is not None
        self.events.append(("preload-start", self.executor.readiness.snapshot().state))
        done = super().preload(models)
        self.events.append(("preload-done", sorted(self.preferred_models())))
        return done

    def select(self, spec):  # type: ignore[no-untyped-def]  # same signature as the base
        self.events.append(("select", sorted(self.preferred_models())))
        return super().select(spec)


def test_preload_happens_before_the_first_claim(
    tmp_path: Path, tiny_weights: dict[str, Path], store: SQLiteJobStore
) -> None:
    settings = Settings(data_dir=tmp_path, profiles=_profile(tmp_path, tiny_weights["wan-t2v"],
                        'compile = { backend = "eager" }'), diffusers_device="cpu",
                        preview_fallback=False)
    base = EngineRegistry.from_settings(settings)
    registry = _RecordingRegistry(settings, diffusers=base.diffusers)
    registry.events = []
    job = _submit(store)  # queued before the worker starts: it must still wait for the preload
    executor = ThreadExecutor(settings, store, LocalArtifactStore(tmp_path / "artifacts"), 1,
                              registry, preload=[MODEL])
    registry.executor = executor
    executor.start()
    try:
        ready = executor.readiness.wait(240.0)
        assert ready.state is ReadyState.READY, ready
        assert ready.preloaded == (f"{MODEL}/t2v",)
        done = _wait_terminal(store, job.id)
    finally:
        executor.stop(30.0)
    assert done.status is JobStatus.SUCCEEDED, done.error
    names = [name for name, _ in registry.events]
    assert names[:3] == ["preload-start", "preload-done", "select"]
    assert registry.events[0][1] is ReadyState.LOADING
    assert registry.events[2][1] == [MODEL]  # resident when the first job was selected


def test_a_slot_that_cannot_run_is_not_ready_and_fails_jobs(
    tmp_path: Path, tiny_weights: dict[str, Path], store: SQLiteJobStore
) -> None:
    # Valid on paper, but this backend needs CUDA: the preload fails on this CPU machine.
    settings = Settings(data_dir=tmp_path, profiles=_profile(
        tmp_path, tiny_weights["wan-t2v"], 'attention_backend = "_native_flash"'),
        diffusers_device="cpu", preview_fallback=False, max_attempts=2)
    executor = ThreadExecutor(settings, store, LocalArtifactStore(tmp_path / "artifacts"), 1,
                              preload=[MODEL])
    job = _submit(store)
    executor.start()
    try:
        state = executor.readiness.wait(240.0)
        assert state.state is ReadyState.FAILED
        assert not state.ready
        assert state.error is not None and state.error["code"] == "workerUnavailable"
        assert "needs a CUDA device" in state.error["message"]
        done = _wait_terminal(store, job.id)
    finally:
        executor.stop(10.0)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "workerUnavailable"
