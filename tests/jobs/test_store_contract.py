"""The JobStore contract: every store implementation must pass these.

Add an implementation to ``STORES`` (a factory taking a temp dir and ``max_attempts``; the same
dir must reopen the same state) and it runs the whole suite. Fixtures get the factory through
:func:`store_factory`, which first starts what the implementation needs (PostgreSQL: the
session's private server from ``tests/pg_server.py``, skipped or failed without one).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg_server import postgres_store
from reelserve.errors import ConflictError
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.jobs.store import JobStore
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result, Workflow

StoreFactory = Callable[[Path, int], JobStore]

STORES: dict[str, StoreFactory] = {
    "sqlite": lambda tmp, max_attempts: SQLiteJobStore(tmp / "jobs.db", max_attempts=max_attempts),
    # A database per temp dir on the session's private PostgreSQL server.
    "postgres": postgres_store,
}

# Servers an implementation needs, as fixture names (requested before its factory is used).
NEEDS: dict[str, str] = {"postgres": "pg_server"}


def store_factory(request: pytest.FixtureRequest, name: str | None = None) -> StoreFactory:
    """The factory of implementation ``name`` (default: the fixture's param), its server up."""
    name = name or request.param
    if name in NEEDS:
        request.getfixturevalue(NEEDS[name])
    return STORES[name]


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[JobStore] = []
    open_store = store_factory(request)

    def factory(tmp: Path = tmp_path, max_attempts: int = 3) -> JobStore:
        store = open_store(tmp, max_attempts)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., JobStore]) -> JobStore:
    return make_store()


def make_job(owner: str = "o1", task_uuid: str | None = None, seeds: int = 1) -> Job:
    task_uuid = task_uuid or str(uuid.uuid4())
    spec = GenerationSpec(task_uuid=task_uuid, model="klingai:1@1", workflow=Workflow.T2V,
                          width=1280, height=720, fps=30, duration=5.0,
                          seeds=list(range(1, seeds + 1)))
    return Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner=owner,
               request={"taskUUID": task_uuid}, spec=spec)


def make_result(index: int) -> Result:
    return Result(index=index, video_uuid=str(uuid.uuid4()), seed=index, artifact_key=f"outputs/{index}",
                  content_type="video/mp4", size_bytes=10, width=1280, height=720, fps=30.0,
                  num_frames=150, duration=5.0, cost=0.1)


def test_create_and_get_roundtrip(store: JobStore) -> None:
    job = make_job()
    created = store.create(job)
    assert created.status is JobStatus.QUEUED and created.attempts == 0
    got = store.get(job.id)
    assert got is not None and got.spec == job.spec and got.request == job.request
    assert store.get_by_task("o1", job.task_uuid) == got
    assert store.get("missing") is None


def test_task_uuid_unique_per_owner_only(store: JobStore) -> None:
    job = make_job(task_uuid="t-1")
    store.create(job)
    with pytest.raises(ConflictError) as err:
        store.create(make_job(task_uuid="t-1"))
    assert err.value.code == "conflictTaskUUID" and err.value.parameter == "taskUUID"
    other = store.create(make_job(owner="o2", task_uuid="t-1"))
    assert store.get_by_task("o2", "t-1") == other
    # Jobs are never visible to other owners.
    assert store.get_by_task("o3", "t-1") is None


def test_claim_is_fifo_and_exclusive(store: JobStore) -> None:
    first, second = make_job(), make_job()
    store.create(first)
    time.sleep(0.01)
    store.create(second)
    a = store.claim("w1", 30)
    b = store.claim("w2", 30)
    assert a is not None and b is not None
    assert (a.id, b.id) == (first.id, second.id)
    assert a.status is JobStatus.RUNNING and a.attempts == 1
    assert store.claim("w3", 30) is None


def test_concurrent_claims_never_duplicate(store: JobStore) -> None:
    ids = {store.create(make_job()).id for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim(name, 30)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_heartbeat_renews_and_expired_lease_is_reclaimed(store: JobStore) -> None:
    job = store.create(make_job())
    assert store.claim("w1", 0.3) is not None
    time.sleep(0.2)
    beat = store.heartbeat(job.id, "w1", 0.3, progress=40)
    assert beat.owned and not beat.cancel_requested
    time.sleep(0.2)
    assert store.claim("w2", 0.3) is None  # renewed: still w1's
    assert store.get(job.id).progress == 40  # type: ignore[union-attr]
    time.sleep(0.4)
    again = store.claim("w2", 30)
    assert again is not None and again.id == job.id and again.attempts == 2
    # The dead worker lost its lease and can write nothing more.
    assert not store.heartbeat(job.id, "w1", 30).owned
    assert not store.add_result(job.id, "w1", make_result(0))
    assert not store.finish(job.id, "w1")
    assert store.fail(job.id, "w1", {"code": "x", "message": "y"}) is None


def test_job_failing_max_attempts_times_ends_with_error(make_store: Callable[..., JobStore]) -> None:
    store = make_store(max_attempts=2)
    job = store.create(make_job())
    for _ in range(2):
        assert store.claim("w", 0.05) is not None
        time.sleep(0.1)  # the worker dies: lease expires
    assert store.claim("w", 0.05) is None
    ended = store.get(job.id)
    assert ended is not None and ended.status is JobStatus.FAILED
    assert ended.error is not None and ended.error["code"] == "workerLost"


def test_fail_with_retry_requeues_until_attempts_run_out(make_store: Callable[..., JobStore]) -> None:
    store = make_store(max_attempts=2)
    job = store.create(make_job())
    store.claim("w", 30)
    requeued = store.fail(job.id, "w", {"code": "internalError", "message": "boom"}, retry=True)
    assert requeued is not None and requeued.status is JobStatus.QUEUED and requeued.error is None
    store.claim("w", 30)
    ended = store.fail(job.id, "w", {"code": "internalError", "message": "boom"}, retry=True)
    assert ended is not None and ended.status is JobStatus.FAILED
    assert ended.error == {"code": "internalError", "message": "boom"}


def test_results_are_recorded_once_and_delivered_once(store: JobStore) -> None:
    job = store.create(make_job(seeds=2))
    store.claim("w", 30)
    r0 = make_result(0)
    assert store.add_result(job.id, "w", r0)
    assert store.add_result(job.id, "w", make_result(0))  # idempotent per index: first one kept
    assert [r.video_uuid for r in store.get(job.id).results] == [r0.video_uuid]  # type: ignore[union-attr]
    assert [r.index for r in store.take_undelivered(job.id)] == [0]
    assert store.add_result(job.id, "w", make_result(1))
    assert store.finish(job.id, "w", cost=0.2)
    assert [r.index for r in store.take_undelivered(job.id)] == [1]
    assert store.take_undelivered(job.id) == []
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.cost == 0.2
    assert done.progress == 100 and len(done.results) == 2


def test_cancel_queued_and_running(store: JobStore) -> None:
    queued = store.create(make_job())
    cancelled = store.request_cancel(queued.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    running = store.create(make_job())
    assert store.claim("w", 30) is not None
    flagged = store.request_cancel(running.id)
    assert flagged is not None and flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert store.heartbeat(running.id, "w", 30).cancel_requested
    ended = store.fail(running.id, "w", {"code": "taskCancelled", "message": "cancelled"})
    assert ended is not None and ended.status is JobStatus.CANCELLED
    assert store.request_cancel("missing") is None


def test_subscribe_notifies_on_changes(store: JobStore) -> None:
    seen: list[str] = []
    unsubscribe = store.subscribe(seen.append)
    job = store.create(make_job())
    store.claim("w", 30)
    store.finish(job.id, "w")
    assert seen.count(job.id) >= 3
    unsubscribe()
    store.create(make_job())
    assert len(seen) == seen.count(job.id)


def test_state_survives_reopening(make_store: Callable[..., JobStore], tmp_path: Path) -> None:
    store = make_store()
    job = store.create(make_job())
    store.claim("w", 30)
    store.add_result(job.id, "w", make_result(0))
    store.close()
    reopened = make_store()
    got = reopened.get(job.id)
    assert got is not None and got.status is JobStatus.RUNNING and len(got.results) == 1


# ------------------------------------------------- issue 14: restarts, hand-backs, in-flight limit


def test_vanished_workers_do_not_use_up_failures(make_store: Callable[..., JobStore]) -> None:
    # A claim whose worker vanished (lease expired) is a loss, budgeted apart from failures:
    # after one loss, a failing claim still has a retry left of max_attempts=2.
    store = make_store(max_attempts=2)
    job = store.create(make_job())
    assert store.claim("w1", 0.05) is not None
    time.sleep(0.1)  # w1 is killed: its lease expires
    taken = store.claim("w2", 30)
    assert taken is not None and taken.id == job.id and taken.attempts == 2
    requeued = store.fail(job.id, "w2", {"code": "internalError", "message": "boom"}, retry=True)
    assert requeued is not None and requeued.status is JobStatus.QUEUED, requeued
    assert store.claim("w3", 30) is not None
    ended = store.fail(job.id, "w3", {"code": "internalError", "message": "boom"}, retry=True)
    assert ended is not None and ended.status is JobStatus.FAILED  # the 2nd failure ends it


def test_release_hands_the_job_back_without_using_an_attempt(
    make_store: Callable[..., JobStore],
) -> None:
    store = make_store(max_attempts=1)
    job = store.create(make_job())
    for _ in range(3):  # three graceful restarts of the worker running it
        claimed = store.claim("w", 30)
        assert claimed is not None and claimed.id == job.id and claimed.attempts == 1
        assert store.add_result(job.id, "w", make_result(0))
        assert store.release(job.id, "w")
        back = store.get(job.id)
        assert back is not None and back.status is JobStatus.QUEUED and back.attempts == 0
        assert len(back.results) == 1  # what was recorded stays
    assert not store.release(job.id, "w")  # no longer held
    assert store.claim("w2", 30) is not None
    assert not store.release(job.id, "w")  # held by another worker
    assert store.finish(job.id, "w2")


def test_in_flight_limit_is_exact_under_concurrent_creates(
    make_store: Callable[..., JobStore],
) -> None:
    from reelserve.errors import InFlightLimitError

    store = make_store()
    barrier = threading.Barrier(12)
    accepted: list[bool] = []
    lock = threading.Lock()

    def create() -> None:
        barrier.wait()
        try:
            store.create(make_job(owner="k"), max_active=5)
            ok = True
        except InFlightLimitError:
            ok = False
        with lock:
            accepted.append(ok)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(accepted) == [False] * 7 + [True] * 5
    assert store.count_active("k") == 5
    # Other owners have their own count; a job that ends frees its place.
    store.create(make_job(owner="other"), max_active=5)
    claimed = store.claim("w", 30)
    assert claimed is not None and claimed.owner == "k"
    assert store.finish(claimed.id, "w")
    store.create(make_job(owner="k"), max_active=5)
