"""Restarts and stops of a real server under a running job (issue 14, items 6 and 11).

A server stopped with SIGTERM stops claiming, lets its running job finish within the grace
period or hands it back to the queue (no lease left to expire, no attempt used), and closes the
job store only after. A server killed with kill -9 again and again under one job does not use up
that job's retries: a vanished worker is budgeted apart from a failing job. Scratch folders that
killed attempts left are removed.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from reelserve_testing import ServerFactory, ServerProcess, poll_results, runware

SLOW = {"REELSERVE_WORKERS": "1", "REELSERVE_ENGINE_SELECTOR": "tiny_engine:slow_engine_selector"}


def _video() -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a boat", "width": 1280, "height": 720, "duration": 5}


def _row(data_dir: Path, task_uuid: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db", timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT status, attempts, lease_owner, error FROM jobs "
                           "WHERE task_uuid = ?", (task_uuid,)).fetchone()
    assert row is not None
    return dict(row)


def _wait(predicate: Callable[[], Any], timeout: float, what: str, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout} s\n{log()}")


def _submit(server: ServerProcess, task: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        resp = runware(http, [task])
        assert resp.status_code == 200 and not resp.json().get("errors"), resp.text


def _stopped_by_sigterm(server: ServerProcess) -> bool:
    # uvicorn re-raises the signal it handled once its shutdown is done (exit status -15).
    return server.proc is not None and server.proc.returncode in (0, -signal.SIGTERM)


def _clean_exit(server: ServerProcess) -> None:
    log = server.log()
    assert "closed database" not in log and "Traceback" not in log, log


def test_sigterm_hands_a_long_job_back_at_once(server_factory: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = server_factory(env={**SLOW, "REELSERVE_SHUTDOWN_GRACE": "0.3"}, data_dir=data_dir)
    task = _video()
    _submit(first, task)
    _wait(lambda: _row(data_dir, task["taskUUID"])["status"] == "running", 30,
          "the job never started", first.log)
    time.sleep(0.3)  # mid-render (the slow engine takes 3 s)
    began = time.monotonic()
    first.stop(timeout=30)
    assert _stopped_by_sigterm(first), first.log()
    assert time.monotonic() - began < 10, first.log()
    _clean_exit(first)
    # Handed back: queued with no lease (another worker takes it now, not after the lease
    # expires), and the claim given back.
    row = _row(data_dir, task["taskUUID"])
    assert row == {"status": "queued", "attempts": 0, "lease_owner": None, "error": None}, row
    second = server_factory(env=SLOW, data_dir=data_dir)
    with httpx.Client(base_url=second.url, timeout=30.0) as http:
        items, errors = poll_results(http, task["taskUUID"], timeout=60)
    assert errors == [] and len(items) == 1, second.log()
    assert _row(data_dir, task["taskUUID"])["attempts"] == 1


def test_sigterm_finishes_the_running_job_and_claims_no_other(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(env={**SLOW, "REELSERVE_SHUTDOWN_GRACE": "60"}, data_dir=data_dir)
    running, waiting = _video(), _video()
    _submit(server, running)
    _wait(lambda: _row(data_dir, running["taskUUID"])["status"] == "running", 30,
          "the job never started", server.log)
    _submit(server, waiting)
    server.stop(timeout=60)
    assert _stopped_by_sigterm(server), server.log()
    _clean_exit(server)
    done = _row(data_dir, running["taskUUID"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    # The second job was never started by the stopping server.
    assert _row(data_dir, waiting["taskUUID"])["attempts"] == 0


def test_kill_9_restarts_do_not_use_up_the_retries(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {**SLOW, "REELSERVE_LEASE_SECONDS": "1"}  # max_attempts stays at its default, 3
    task = _video()
    for round_ in range(1, 4):  # three kill -9 of the server under the same job
        server = server_factory(env=env, data_dir=data_dir)
        if round_ == 1:
            _submit(server, task)
        _wait(lambda r=round_: (row := _row(data_dir, task["taskUUID"]))["status"] == "running"
              and row["attempts"] == r, 30, f"claim {round_} did not happen", server.log)
        time.sleep(0.3)
        server.kill()
    # Each killed attempt left a scratch folder; one of a job that does not exist is stale too.
    work = data_dir / "work"
    assert any(p.name.startswith(_job_id(data_dir, task["taskUUID"])) for p in work.iterdir())
    stray = work / f"{uuid.uuid4()}-abc123"
    stray.mkdir()
    last = server_factory(env=env, data_dir=data_dir)
    with httpx.Client(base_url=last.url, timeout=30.0) as http:
        items, errors = poll_results(http, task["taskUUID"], timeout=60)
    assert errors == [] and len(items) == 1, last.log()
    row = _row(data_dir, task["taskUUID"])
    assert row["status"] == "succeeded" and row["attempts"] == 4, row
    # Cleaned: at start (the stray one) and at the claim (the killed attempts' folders).
    _wait(lambda: not any(work.iterdir()), 10, f"scratch folders left: {list(work.iterdir())}",
          last.log)


def _job_id(data_dir: Path, task_uuid: str) -> str:
    with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db", timeout=30)) as conn:
        row = conn.execute("SELECT id FROM jobs WHERE task_uuid = ?", (task_uuid,)).fetchone()
    return str(row[0])
