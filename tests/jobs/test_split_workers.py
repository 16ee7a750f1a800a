"""A split deployment on PostgreSQL: an API server without engines and two ``reelserve worker``
processes with different profiles. Each worker publishes what it renders into the store with
its heartbeat; the server decides submits from the live workers and each worker claims only
jobs it can render.

Worker A maps ``klingai:1@1`` text to video to ``wan-t2v`` (no audio); worker B maps
``klingai:3@1`` text to video to ``ltx2`` (audio). The preview engine is off on both. Rendering
is done by the tiny test engine (``REELSERVE_ENGINE_SELECTOR``); what each worker claims and what
the server accepts come from the profiles alone (weights folders hold only ``model_index.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve_testing import ServerFactory, WorkerProcess, poll_results, runware

pytestmark = pytest.mark.slow


def _profiles(folder: Path, model: str, pipeline: str) -> Path:
    weights = folder / pipeline
    weights.mkdir(parents=True)
    (weights / "model_index.json").write_text("{}", encoding="utf-8")
    path = folder / "profiles.toml"
    path.write_text(f'[models."{model}".t2v]\npipeline = "{pipeline}"\nweights = "{pipeline}"\n',
                    encoding="utf-8")
    return path


def _task(model: str, **extra: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": model,
            "positivePrompt": "a lighthouse at dusk", "width": 720, "height": 720,
            "duration": 5, "deliveryMethod": "async", **extra}


def _job_id(url: str, task_uuid: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM jobs WHERE task_uuid = %s", (task_uuid,)).fetchone()
    assert row is not None
    return str(row[0])


def _workers_cli(env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
    done = subprocess.run([sys.executable, "-m", "reelserve", "workers", *args],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_each_worker_gets_only_what_it_can_render(
    server_factory: ServerFactory, pg_database: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    env = {"REELSERVE_DATABASE_URL": pg_database,
           "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector",
           "REELSERVE_LEASE_SECONDS": "2"}
    server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
    worker_env = {**env, "REELSERVE_WORKERS": "1", "REELSERVE_PREVIEW_FALLBACK": "false"}
    workers: list[WorkerProcess] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            # No worker registered yet: the server cannot tell, so it accepts and queues.
            early = _task("klingai:4@3")
            assert runware(http, [early]).status_code == 200
            assert "no live workers" in _workers_cli({"REELSERVE_DATABASE_URL": pg_database})

            a = WorkerProcess(data_dir, {**worker_env, "REELSERVE_PROFILES": str(
                _profiles(tmp_path / "a", "klingai:1@1", "wan-t2v"))}, "worker-a").start()
            b = WorkerProcess(data_dir, {**worker_env, "REELSERVE_PROFILES": str(
                _profiles(tmp_path / "b", "klingai:3@1", "ltx2"))}, "worker-b").start()
            workers += [a, b]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                listed = http.get("/v1/models").json()["data"]
                if [m["id"] for m in listed] == ["klingai:1@1", "klingai:3@1"]:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"workers never registered\n{a.log()}\n{b.log()}")
            assert {m["id"]: m["engine"] for m in listed} == {
                "klingai:1@1": {"t2v": "wan-t2v"}, "klingai:3@1": {"t2v": "ltx2"}}
            assert [m["supports"]["t2v"]["sound"] for m in listed] == [False, True]

            # Only B renders klingai:3@1 (with sound); only A renders klingai:1@1.
            on_b = _task("klingai:3@1", providerSettings={"klingai": {"sound": True}})
            on_a = _task("klingai:1@1")
            assert runware(http, [on_b, on_a]).status_code == 200
            for task, mine, other in ((on_b, b, a), (on_a, a, b)):
                items, errors = poll_results(http, task["taskUUID"], timeout=180)
                assert errors == [] and len(items) == 1, f"{errors}\n{mine.log()}"
                job_id = _job_id(pg_database, task["taskUUID"])
                assert f"job {job_id} finished" in mine.log()
                assert job_id not in other.log()

            # What no live worker honours is refused at submit, naming the parameter.
            [sound] = runware(http, [_task("klingai:1@1", providerSettings={
                "klingai": {"sound": True}})]).json()["errors"]
            assert sound["code"] == "unsupportedSound" and "'wan-t2v'" in sound["message"]
            [model] = runware(http, [_task("klingai:4@3")]).json()["errors"]
            assert model["code"] == "modelUnavailable"
            assert model["allowedValues"] == ["klingai:1@1", "klingai:3@1"]

            # The job accepted before any worker registered stays queued: nobody renders it.
            [early_item] = runware(http, [{"taskType": "getResponse",
                                           "taskUUID": early["taskUUID"]}]).json()["data"]
            assert early_item["status"] == "processing"

        # reelserve workers: both live workers and what each renders.
        text = _workers_cli({"REELSERVE_DATABASE_URL": pg_database})
        lines = text.splitlines()
        assert sum(1 for line in lines if "host=" in line and "claims=1 route(s)" in line) == 2
        assert "  wan-t2v: klingai:1@1/t2v" in lines
        assert "  ltx2: klingai:3@1/t2v  [sound]" in lines
        published = json.loads(_workers_cli({"REELSERVE_DATABASE_URL": pg_database}, "--json"))
        assert sorted(w["serves"][0] for w in published) == ["klingai:1@1/t2v", "klingai:3@1/t2v"]
    finally:
        for worker in workers:
            worker.stop()
    # A worker that stops removes its row.
    assert "no live workers" in _workers_cli({"REELSERVE_DATABASE_URL": pg_database})
