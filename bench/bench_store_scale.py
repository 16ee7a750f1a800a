"""Job store latency as one API key's jobs grow: submit, getResponse, lists and claim.

Fills a fresh store with 0 / 5k / 20k / 50k / 100k jobs of one key (finished jobs with one
result each, spread over the OpenAI, Kling and Runware origins, as an active key leaves them),
and at each size measures, on the store itself (the work below the HTTP layer):

* ``submit``: :meth:`JobStore.create` of a new job (the durable insert of a submit);
* ``get``: :meth:`JobStore.get_by_task` of a random job (what getResponse reads);
* ``list``: the OpenAI list, first page (``origin="openai"``, 20 jobs);
* ``list deep``: the OpenAI list, the page after a job half-way down (cursor paging);
* ``list status``: the key's queued jobs (``/v1/tasks?status=queued``);
* ``queue pos``: :meth:`JobStore.queue_position` of the newest queued job (``/v1/tasks/{id}``);
* ``claim``: :meth:`JobStore.claim` of one of the queued jobs;
* ``stats``: one ``/metrics`` scrape (:meth:`JobStore.stats` and :meth:`JobStore.durations`).

Prints the median of each in ms per size, the ratio to the empty store, and the database size.
Filling writes rows in bulk with the stores' own row values (``reelserve.jobs.rows``): creating
100k jobs one by one would only measure the fill.

    python bench/bench_store_scale.py                 # SQLite, 0 .. 100k
    python bench/bench_store_scale.py --small         # SQLite, 0 .. 20k
    python bench/bench_store_scale.py --postgres URL  # PostgreSQL (an empty database)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reelserve.jobs.rows import job_cursor, new_job_values
from reelserve.jobs.store import JobStore
from reelserve.tasks import GenerationSpec, Job, JobStatus, Result, Workflow

SIZES = (0, 5_000, 20_000, 50_000, 100_000)
OWNER = "key-bench"
ORIGINS = ("openai", "kling.text2video", "runware")
REPEATS = 30


def _job(origin: str, owner: str = OWNER) -> Job:
    task = str(uuid.uuid4())
    spec = GenerationSpec(task_uuid=task, model="klingai:1@1", workflow=Workflow.T2V, width=720,
                          height=720, fps=30, duration=5.0, seeds=[1])
    return Job(id=str(uuid.uuid4()), task_uuid=task, owner=owner, origin=origin,
               request={"taskUUID": task, "positivePrompt": "a lighthouse at dusk"}, spec=spec)


def _result() -> str:
    return Result(index=0, video_uuid=str(uuid.uuid4()), seed=1,
                  artifact_key=f"outputs/{uuid.uuid4()}", content_type="video/mp4",
                  size_bytes=123456, width=720, height=720, fps=30.0, num_frames=150,
                  duration=5.0, cost=0.1, render_seconds=2.0,
                  encode_seconds=0.3).model_dump_json()


STATUS_AT = 8
"""Where ``status`` is in :func:`new_job_values` (id, owner, task_uuid, origin, origin_data,
request, spec, model, status, route)."""


def _rows(count: int, start: float) -> list[tuple[Any, ...]]:
    """``count`` finished jobs (their INSERT values) created one second apart from ``start``."""
    rows = []
    for i in range(count):
        job = _job(ORIGINS[i % len(ORIGINS)])
        values = list(new_job_values(job))
        values[STATUS_AT] = JobStatus.SUCCEEDED.value
        at = start + i
        rows.append((*values, at, at + 5, at + 1, job.id))
    return rows


def fill_sqlite(store: Any, rows: list[tuple[Any, ...]]) -> None:
    with store._write() as conn:  # the store's own connection and write lock
        conn.executemany(
            "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, model, "
            "status, route, progress, created_at, updated_at, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 100, ?, ?, ?)", [r[:-1] for r in rows])
        conn.executemany(
            "INSERT INTO results (job_id, idx, data, delivered, created_at) "
            "VALUES (?, 0, ?, 1, ?)", [(r[-1], _result(), r[-2]) for r in rows])


def fill_postgres(store: Any, rows: list[tuple[Any, ...]]) -> None:
    with store._tx() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobs (id, owner, task_uuid, origin, origin_data, request, spec, model, "
            "status, route, progress, created_at, updated_at, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 100, %s, %s, %s)",
            [r[:-1] for r in rows])
        cur.executemany(
            "INSERT INTO results (job_id, idx, data, delivered, created_at) "
            "VALUES (%s, 0, %s, TRUE, %s)", [(r[-1], _result(), r[-2]) for r in rows])
        cur.execute("ANALYZE jobs")
        cur.execute("ANALYZE results")


def _median_ms(action: Callable[[], object], repeats: int = REPEATS) -> float:
    """The median of ``repeats`` runs in ms. The fastest run is kept in ``BEST`` too: on a
    shared machine other processes inflate medians, while the best run shows the work itself."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    BEST.append(min(times) * 1000)
    return statistics.median(times) * 1000


BEST: list[float] = []


def measure(store: JobStore, known: list[str]) -> dict[str, float]:
    """One size's medians (ms). ``known`` holds task UUIDs of the key's jobs."""
    out: dict[str, float] = {}
    submitted: list[Job] = []
    out["submit"] = _median_ms(lambda: submitted.append(store.create(_job("openai"))))
    known = known + [job.task_uuid for job in submitted]  # an empty store has these only
    out["get"] = _median_ms(lambda: store.get_by_task(OWNER, random.choice(known)))
    out["list"] = _median_ms(lambda: store.list_jobs(OWNER, origin="openai", limit=20))
    middle = store.get_by_task(OWNER, known[len(known) // 2])
    if middle is not None:
        cursor = job_cursor(middle)
        out["list deep"] = _median_ms(
            lambda: store.list_jobs(OWNER, origin="openai", limit=20, after=cursor))
    out["list status"] = _median_ms(
        lambda: store.list_jobs(OWNER, statuses=[JobStatus.QUEUED], limit=20))
    out["queue pos"] = _median_ms(lambda: store.queue_position(submitted[-1].id))
    claimed: list[Job] = []

    def claim() -> None:
        job = store.claim("bench-worker", 60)
        assert job is not None
        claimed.append(job)

    out["claim"] = _median_ms(claim)  # takes the REPEATS jobs the submits queued
    for job in claimed:  # leave nothing running for the next size
        store.finish(job.id, "bench-worker")
    out["stats"] = _median_ms(lambda: (store.stats(), store.durations()), 5)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="stop at 20k jobs")
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database")
    args = parser.parse_args()
    sizes = [s for s in SIZES if not args.small or s <= 20_000]

    with tempfile.TemporaryDirectory() as tmp:
        store: Any
        if args.postgres:
            from reelserve.jobs.postgres import PostgresJobStore

            store, fill, db = PostgresJobStore(args.postgres), fill_postgres, None
        else:
            from reelserve.jobs.sqlite import SQLiteJobStore

            db = Path(tmp) / "reelserve.db"
            store, fill = SQLiteJobStore(db), fill_sqlite
        # Another key's jobs too: lists must not depend on them either.
        other = [(*r[:1], "key-other", *r[2:]) for r in _rows(2_000, time.time() - 10**7)]
        fill(store, other)
        known: list[str] = []
        filled = 0
        base = time.time() - 10**6
        header = f"{'jobs':>7} " + " ".join(f"{k:>13}" for k in (
            "submit", "get", "list", "list deep", "list status", "queue pos", "claim", "stats")
        ) + "   db MB"
        print(f"store: {'PostgreSQL' if args.postgres else 'SQLite'}; median ms (fastest run)")
        print(header)
        first: dict[str, float] | None = None
        for size in sizes:
            rows = _rows(size - filled, base + filled)
            if rows:
                fill(store, rows)
                known += [r[2] for r in rows]
            filled = size
            result = measure(store, known or [str(uuid.uuid4())])
            first = first or result
            size_mb = (db.stat().st_size + _wal(db)) / 2**20 if db is not None else float("nan")
            best = dict(zip(result, BEST, strict=True))
            BEST.clear()
            print(f"{size:>7} " + " ".join(
                f"{result.get(k, float('nan')):>6.2f} ({best.get(k, float('nan')):4.2f})"
                for k in ("submit", "get", "list", "list deep", "list status", "queue pos",
                          "claim", "stats"))
                + f"   {size_mb:6.1f}", flush=True)
        assert first is not None
        print("ratio of the largest size to the empty store: " + json.dumps(
            {k: round(v / first[k], 2) for k, v in result.items() if first.get(k)}))
        store.close()
    return 0


def _wal(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


if __name__ == "__main__":
    sys.exit(main())
