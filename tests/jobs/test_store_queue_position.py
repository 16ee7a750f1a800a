"""The store contract for ``queue_position``: the FIFO position of a queued job, over every
store in ``test_store_contract.STORES``, and the SQLite query plan (an index range, no scan)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store_contract import STORES, make_job, store_factory

from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.jobs.store import JobStore


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    opened = store_factory(request)(tmp_path, 3)
    yield opened
    opened.close()


def test_queue_position_counts_queued_jobs_created_before(store: JobStore) -> None:
    jobs = []
    for owner in ("a", "b", "a", "c"):  # every owner's jobs share the queue
        jobs.append(store.create(make_job(owner)))
        time.sleep(0.005)
    assert [store.queue_position(j.id) for j in jobs] == [0, 1, 2, 3]
    claimed = store.claim("w1", 30)
    assert claimed is not None and claimed.id == jobs[0].id
    # the running job has no position; everyone behind it moved up by one
    assert [store.queue_position(j.id) for j in jobs] == [None, 0, 1, 2]
    store.request_cancel(jobs[2].id)  # a cancelled job leaves the queue
    assert [store.queue_position(j.id) for j in jobs[1:]] == [0, None, 1]
    assert store.queue_position("no-such-job") is None


def test_queue_position_breaks_created_at_ties_by_id(store: JobStore) -> None:
    # Two jobs created at the same instant still get distinct, consecutive positions.
    first, second = make_job("a"), make_job("b")
    now = time.time()
    first.created_at = second.created_at = now
    store.create(first)
    store.create(second)
    positions = sorted(p for p in (store.queue_position(first.id),
                                   store.queue_position(second.id)) if p is not None)
    assert positions == [0, 1]


def test_sqlite_queue_position_reads_an_index_range(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        store.create(make_job())
        plan = store._conn().execute(  # the query queue_position runs
            "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM jobs WHERE status = ? AND created_at <= ? "
            "AND NOT (created_at = ? AND id >= ?)", ("queued", 1.0, 1.0, "x")).fetchall()
        detail = " ".join(str(row[-1]) for row in plan)
        assert "USING" in detail and "INDEX" in detail and "created_at<" in detail, detail
    finally:
        store.close()
