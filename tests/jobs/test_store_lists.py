"""Lists that scale, retention and the numbers metrics read: the store contract for
``list_jobs`` (filters, keyset cursors), ``expired_jobs``, ``stats`` and ``durations``.

Runs over every store in ``test_store_contract.STORES``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import STORES, make_result, store_factory

from reelserve.errors import ValidationError
from reelserve.jobs.rows import job_cursor
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.jobs.store import DURATION_BUCKETS, DURATIONS, JobStore
from reelserve.tasks import GenerationSpec, Job, JobStatus, Workflow


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened = store_factory(request)(tmp_path, 3)
    yield opened
    opened.close()


def _job(owner: str, origin: str = "runware", model: str = "klingai:1@1") -> Job:
    task = str(uuid.uuid4())
    spec = GenerationSpec(task_uuid=task, model=model, workflow=Workflow.T2V, width=720,
                          height=720, fps=30, duration=5.0, seeds=[1])
    return Job(id=str(uuid.uuid4()), task_uuid=task, owner=owner, origin=origin, spec=spec)


def _all_pages(store: JobStore, owner: str, **filters: object) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        jobs, cursor = store.list_jobs(owner, limit=3, after=cursor, **filters)  # type: ignore[arg-type]
        pages.append([j.id for j in jobs])
        if cursor is None:
            return pages


def test_cursor_pages_cover_every_job_once_newest_first(store: JobStore) -> None:
    created = [store.create(_job("a", "openai" if i % 2 else "kling.text2video")) for i in range(8)]
    store.create(_job("b", "openai"))
    pages = _all_pages(store, "a")
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [i for p in pages for i in p] == [j.id for j in reversed(created)]
    openai = [j.id for j in reversed(created) if j.origin == "openai"]
    assert [i for p in _all_pages(store, "a", origin="openai") for i in p] == openai
    # a full last page says there is nothing more instead of an empty page after it
    jobs, cursor = store.list_jobs("a", origin="openai", limit=4)
    assert [j.id for j in jobs] == openai and cursor is None


def test_status_filters_one_several_and_with_origin(store: JobStore) -> None:
    jobs = [store.create(_job("a", "openai" if i < 4 else "runware")) for i in range(7)]
    running = store.claim("w", 30)  # the oldest: jobs[0]
    assert running is not None and running.id == jobs[0].id
    store.request_cancel(jobs[1].id)
    store.request_cancel(jobs[5].id)
    newest_first = list(reversed(jobs))

    def ids(**filters: object) -> list[str]:
        return [i for p in _all_pages(store, "a", **filters) for i in p]

    assert ids(statuses={JobStatus.CANCELLED}) == [jobs[5].id, jobs[1].id]
    assert ids(statuses=[JobStatus.QUEUED]) == [
        j.id for j in newest_first if j.id not in (jobs[0].id, jobs[1].id, jobs[5].id)]
    several = ids(statuses=[JobStatus.RUNNING, JobStatus.CANCELLED])
    assert several == [jobs[5].id, jobs[1].id, jobs[0].id]  # merged in list order
    assert ids(origin="openai", statuses=[JobStatus.CANCELLED, JobStatus.QUEUED]) == [
        jobs[3].id, jobs[2].id, jobs[1].id]
    assert ids(statuses=[JobStatus.SUCCEEDED]) == []
    # several statuses with an offset (Kling pages by number) keep the merged order
    page, _ = store.list_jobs("a", statuses=[JobStatus.QUEUED, JobStatus.CANCELLED], limit=2,
                              offset=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id]


def test_cursor_of_a_job_and_bad_cursors(store: JobStore) -> None:
    jobs = [store.create(_job("a")) for _ in range(3)]
    below, cursor = store.list_jobs("a", after=job_cursor(jobs[2]))
    assert [j.id for j in below] == [jobs[1].id, jobs[0].id] and cursor is None
    for bad in ("not-a-cursor!", "W10", "WyJ4IiwxXQ"):  # garbage, [], ["x",1]
        with pytest.raises(ValidationError) as info:
            store.list_jobs("a", after=bad)
        assert info.value.code == "invalidCursor"
        assert info.value.parameter == "after"


def test_expired_jobs_are_old_terminal_ones_only(store: JobStore) -> None:
    done = store.create(_job("a"))
    claimed = store.claim("w", 30)
    assert claimed is not None and claimed.id == done.id
    assert store.finish(done.id, "w")
    cancelled = store.create(_job("a"))
    store.request_cancel(cancelled.id)
    queued = store.create(_job("a"))
    later = time.time() + 5
    old = store.expired_jobs(later)
    assert [j.id for j in old] == [done.id, cancelled.id]  # oldest change first
    assert queued.id not in [j.id for j in old]
    assert store.expired_jobs(done.updated_at - 1) == []
    assert [j.id for j in store.expired_jobs(later, limit=1)] == [done.id]


def test_stats_and_durations_after_jobs_ran(store: JobStore) -> None:
    first = store.create(_job("a", model="m1"))
    store.create(_job("a", model="m1"))
    store.create(_job("b", model="m2"))
    job = store.claim("w1", 30)
    assert job is not None and job.id == first.id
    assert store.add_result(job.id, "w1", make_result(0))
    assert store.finish(job.id, "w1")
    failing = store.claim("w2", 30)
    assert failing is not None
    store.fail(failing.id, "w2", {"code": "engineFailed", "message": "x", "kind": "internal"})
    busy = store.claim("w3", 30)
    assert busy is not None

    stats = store.stats()
    assert stats.active == {"running": 1}
    assert stats.finished == {"succeeded": 1, "failed": 1}
    assert stats.queues == []  # nothing queued any more
    assert stats.failures == {"engineFailed": 1}
    assert stats.results == 1
    assert stats.busy_workers == 1
    assert abs(stats.now - time.time()) < 5
    cancelled = store.create(_job("d"))
    store.request_cancel(cancelled.id)  # a queued job ends at once
    assert store.stats().finished == {"succeeded": 1, "failed": 1, "cancelled": 1}

    store.create(_job("c", model="m2"))
    queues = store.stats().queues
    assert [(q.model, q.depth) for q in queues] == [("m2", 1)]
    assert queues[0].oldest_created_at <= time.time()

    hist = store.durations()
    assert set(hist) == set(DURATIONS)
    assert hist["queue_wait"].count == 3  # every claimed job, once
    waits = hist["queue_wait"]
    assert len(waits.buckets) == len(DURATION_BUCKETS) and waits.buckets[-1] == 3  # all < 1 h
    assert waits.buckets == sorted(waits.buckets) and 0 <= waits.total < 60
    assert hist["run"].count == 1
    assert hist["delivery"].count == 0
    assert hist["render"].count == 0  # make_result records no timings
    timed = make_result(0).model_copy(update={"render_seconds": 2.0, "encode_seconds": 4000.0})
    assert store.add_result(busy.id, "w3", timed)
    assert store.add_result(busy.id, "w3", timed)  # the same index again counts nothing
    hist = store.durations()
    assert (hist["render"].count, hist["render"].total) == (1, 2.0)
    assert hist["render"].buckets[DURATION_BUCKETS.index(2.5)] == 1
    assert hist["render"].buckets[DURATION_BUCKETS.index(1.0)] == 0
    assert hist["encode"].count == 1 and hist["encode"].buckets[-1] == 0  # only in +Inf
    # counters: purging the jobs leaves them
    for job_id in (first.id, failing.id):
        assert store.delete(job_id)
    assert store.durations()["run"].count == 1 and store.durations()["queue_wait"].count == 3
    after = store.stats()
    assert after.finished == {"succeeded": 1, "failed": 1, "cancelled": 1}
    assert after.results == 2 and after.failures == {"engineFailed": 1}


def test_sqlite_lists_seek_an_index_without_sorting(tmp_path: Path) -> None:
    """The query plan of every list shape uses a jobs_owner_* index and no temp sort: that is
    what keeps a page flat from 0 to 100k jobs (bench/bench_store_scale.py measures it)."""
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        from reelserve.jobs.rows import list_query

        conn = sqlite3.connect(tmp_path / "jobs.db")
        shapes = [
            {"origin": None, "statuses": None},
            {"origin": "openai", "statuses": None},
            {"origin": None, "statuses": ["queued"]},
            {"origin": "openai", "statuses": ["queued"]},
            {"origin": None, "statuses": ["cancelled", "queued"]},
        ]
        for shape in shapes:
            for cursor in (None, (1.0, "x")):
                sql, args = list_query("id, created_at", "a", cursor=cursor, limit=20, offset=0, mark="?",
                                       **shape)  # type: ignore[arg-type]
                plan = " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
                assert "jobs_owner_" in plan, (shape, plan)
                branches = plan.count("jobs_owner_")
                # a merge of several branches may sort, but only the few rows each branch
                # read (LIMIT page + 1): never the owner's jobs
                assert plan.count("TEMP B-TREE") <= (branches + 1 if branches > 1 else 0), \
                    (shape, plan)
                assert "SCAN jobs" not in plan, (shape, plan)
        conn.close()
    finally:
        store.close()


def test_a_delivered_outbox_row_counts_its_delivery_duration(store: JobStore) -> None:
    from reelserve.tasks import Delivery

    job = _job("a")
    job = job.model_copy(update={"spec": job.spec.model_copy(
        update={"delivery": Delivery(webhook_url="http://127.0.0.1:9/hook")})})
    store.create(job)
    assert store.claim("w", 30) is not None
    assert store.add_result(job.id, "w", make_result(0))
    [row] = store.claim_deliveries("d", 30)
    assert store.record_delivery(row.id, "d", {"attempt": 1, "status": 503}, state="pending",
                                 next_at=0.0)
    assert store.durations()["delivery"].count == 0  # a failed attempt ends nothing
    assert store.stats().pending_deliveries == {"webhook": 1}
    [row] = store.claim_deliveries("d", 30)
    assert store.record_delivery(row.id, "d", {"attempt": 2, "status": 200}, state="delivered")
    delivery = store.durations()["delivery"]
    assert delivery.count == 1 and 0 <= delivery.total < 60
    stats = store.stats()
    assert stats.pending_deliveries == {}
    assert stats.deliveries == {("webhook", "delivered"): 1}
    assert stats.delivery_attempts == {"webhook": 2}
    assert stats.delivery_failed_attempts == {"webhook": 1}
