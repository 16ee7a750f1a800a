"""End to end on PostgreSQL: ``reelserve serve`` without worker threads and separate ``reelserve
worker`` processes, sharing only the database and the data dir (artifacts), as on two machines.

The server renders nothing itself (``REELSERVE_WORKERS=0``): every result below was made by a
worker process, claimed through the database and stored in the shared data dir.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve_testing import ServerFactory, WorkerProcess, poll_results, runware

pytestmark = pytest.mark.slow

LEASE = "1.5"  # seconds: a killed worker's job is claimed again soon after


@pytest.fixture
def cluster(
    server_factory: ServerFactory, pg_database: str, tmp_path: Path
) -> Iterator[tuple[httpx.Client, Callable[[], WorkerProcess]]]:
    """An API server with no worker threads and a way to start worker processes beside it."""
    data_dir = tmp_path / "shared"
    env = {"REELSERVE_DATABASE_URL": pg_database,
           "REELSERVE_ENGINE_SELECTOR": "tiny_engine:slow_engine_selector",
           "REELSERVE_LEASE_SECONDS": LEASE}
    server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
    workers: list[WorkerProcess] = []

    def start_worker() -> WorkerProcess:
        worker = WorkerProcess(data_dir, {**env, "REELSERVE_WORKERS": "1"},
                               f"worker-{len(workers)}").start()
        workers.append(worker)
        return worker

    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            yield http, start_worker
    finally:
        for worker in workers:
            worker.stop()


def _task() -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a lighthouse at dusk", "width": 720, "height": 720,
            "duration": 5, "deliveryMethod": "async"}


def _attempts(url: str, task_uuid: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT attempts FROM jobs WHERE task_uuid = %s", (task_uuid,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_process_renders_what_the_server_accepted(
    cluster: tuple[httpx.Client, Callable[[], WorkerProcess]], pg_database: str
) -> None:
    http, start_worker = cluster
    task = _task()
    ack = runware(http, [task])
    assert ack.status_code == 200, ack.text
    worker = start_worker()  # started after the submit: it finds the job already queued
    items, errors = poll_results(http, task["taskUUID"], timeout=120)
    assert errors == [], f"{errors}\n{worker.log()}"
    [item] = items
    assert item["taskUUID"] == task["taskUUID"] and item["videoUUID"]
    # The worker wrote the file into the shared data dir; the server serves it from there.
    video = http.get(item["videoURL"])
    assert video.status_code == 200 and len(video.content) > 1000
    assert _attempts(pg_database, task["taskUUID"]) == 1
    assert not (worker.data_dir / "reelserve.db").exists(), "a process fell back to SQLite"


def test_kill_9_of_a_worker_mid_job_then_another_worker_finishes_it(
    cluster: tuple[httpx.Client, Callable[[], WorkerProcess]], pg_database: str
) -> None:
    http, start_worker = cluster
    first = start_worker()
    task = _task()
    assert runware(http, [task]).status_code == 200
    # Wait until the job is really running on the first worker (progress reported), then kill it.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = runware(http, [{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]).json()
        assert not body.get("errors"), body
        [item] = body["data"]
        assert item["status"] != "success", "the job finished before the worker could be killed"
        if item["status"] == "processing" and item["progress"] > 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the job never reported progress\n{first.log()}")
    first.kill()
    second = start_worker()
    items, errors = poll_results(http, task["taskUUID"], timeout=120)
    assert errors == [], f"{errors}\n{second.log()}"
    [item] = items
    assert http.get(item["videoURL"]).status_code == 200
    # Claimed twice: once by the killed worker, once (after its lease ran out) by the second.
    assert _attempts(pg_database, task["taskUUID"]) == 2
