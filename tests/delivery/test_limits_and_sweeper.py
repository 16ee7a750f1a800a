"""Per-key limits with a controlled clock, and the sweeper on real files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reelserve.api.ratelimit import RateLimiter
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.delivery.sweeper import Sweeper
from reelserve.errors import ErrorKind, RateLimitError
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_submits_per_minute_slide() -> None:
    clock = Clock()
    limiter = RateLimiter(
        submits_per_minute=3, max_in_flight=0, count_active=lambda o: 0, clock=clock
    )
    for _ in range(3):
        limiter.check_submit("a")
        clock.now += 1
    with pytest.raises(RateLimitError) as info:
        limiter.check_submit("a")
    err = info.value
    assert err.code == "rateLimitExceeded" and err.kind is ErrorKind.RATE_LIMIT
    assert err.http_status == 429
    assert "3 per minute" in err.message and "Retry in 57 s" in err.message
    limiter.check_submit("b")  # per key
    clock.now += 57.01  # the first submit leaves the window
    limiter.check_submit("a")
    with pytest.raises(RateLimitError):
        limiter.check_submit("a")


def test_in_flight_uses_the_store_count() -> None:
    active = {"a": 5, "b": 1}
    limiter = RateLimiter(submits_per_minute=0, max_in_flight=2, count_active=active.__getitem__)
    with pytest.raises(RateLimitError, match="5 tasks queued or running; at most 2"):
        limiter.check_submit("a")
    for _ in range(100):  # per-minute limit off
        limiter.check_submit("b")


def test_zero_means_unlimited(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "db.sqlite")
    try:
        settings = Settings(_env_file=None, rate_submits_per_minute=0, rate_max_in_flight=0)  # type: ignore[call-arg]
        limiter = RateLimiter.from_settings(settings, store)
        for _ in range(500):
            limiter.check_submit("a")
    finally:
        store.close()


def test_sweeper_removes_expired_uploads_only(tmp_path: Path) -> None:
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store = SQLiteJobStore(tmp_path / "db.sqlite")
    try:
        old = artifacts.put_bytes("uploads/old", b"x", content_type="image/png", extension="png")
        artifacts.put_bytes("uploads/new", b"y", content_type="image/png", extension="png")
        settings = Settings(_env_file=None, default_ttl=60)  # type: ignore[call-arg]
        sweeper = Sweeper(settings, store, artifacts)
        assert sweeper.sweep(now=old.created_at + 59).uploads == 0
        assert artifacts.info("uploads/old") is not None
        assert sweeper.sweep(now=time.time() + 61).uploads == 2
        assert artifacts.info("uploads/old") is None and artifacts.info("uploads/new") is None
        assert not (tmp_path / "artifacts" / "uploads" / "old").exists()
    finally:
        store.close()


def test_sweeper_thread_starts_and_stops(tmp_path: Path) -> None:
    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store = SQLiteJobStore(tmp_path / "db.sqlite")
    try:
        artifacts.put_bytes("uploads/u1", b"x", content_type="image/png")
        clock = Clock()
        clock.now = time.time() + 3600
        settings = Settings(_env_file=None, default_ttl=60, sweep_interval=0.05)  # type: ignore[call-arg]
        sweeper = Sweeper(settings, store, artifacts, clock=clock)
        sweeper.start()
        deadline = time.monotonic() + 5
        while artifacts.info("uploads/u1") is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        sweeper.stop()
        assert artifacts.info("uploads/u1") is None
    finally:
        store.close()


def test_sweeper_purges_old_terminal_jobs_with_their_files(tmp_path: Path) -> None:
    import uuid

    from reelserve.tasks import GenerationSpec, Job, JobStatus, Result, Workflow

    def job() -> Job:
        task = str(uuid.uuid4())
        spec = GenerationSpec(task_uuid=task, model="klingai:1@1", workflow=Workflow.T2V,
                              width=720, height=720, fps=30, duration=5.0, seeds=[1])
        return Job(id=str(uuid.uuid4()), task_uuid=task, owner="a", spec=spec)

    artifacts = LocalArtifactStore(tmp_path / "artifacts")
    store = SQLiteJobStore(tmp_path / "db.sqlite")
    try:
        done = store.create(job())
        assert store.claim("w", 30) is not None
        output = artifacts.put_bytes(f"outputs/{done.id}-0", b"video", content_type="video/mp4",
                                     extension="mp4")
        store.add_result(done.id, "w", Result(
            index=0, video_uuid=str(uuid.uuid4()), seed=1, artifact_key=output.key,
            content_type="video/mp4", size_bytes=5, width=720, height=720, fps=30.0,
            num_frames=150, duration=5.0))
        assert store.finish(done.id, "w")
        waiting = store.create(job())
        day = 86400.0
        # default_ttl beyond the retention: only the retention can remove the output here
        settings = Settings(_env_file=None, default_ttl=90 * 86400, job_retention_days=30)  # type: ignore[call-arg]
        sweeper = Sweeper(settings, store, artifacts)
        assert sweeper.sweep(now=time.time() + 29 * day).jobs == 0
        assert store.get(done.id) is not None and artifacts.info(output.key) is not None
        report = sweeper.sweep(now=time.time() + 31 * day)
        assert report.jobs == 1
        assert store.get(done.id) is None and artifacts.info(output.key) is None
        kept = store.get(waiting.id)  # not terminal: never purged
        assert kept is not None and kept.status is JobStatus.QUEUED
        forever = Settings(_env_file=None, job_retention_days=0)  # type: ignore[call-arg]
        store.request_cancel(waiting.id)
        assert Sweeper(forever, store, artifacts).sweep(now=time.time() + 999 * day).jobs == 0
        assert store.get(waiting.id) is not None
    finally:
        store.close()
