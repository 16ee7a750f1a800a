"""Durability and load on a real server: kill -9 mid-job, and 200 concurrent async submits."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from reelserve_testing import ServerFactory, runware


def _task(**extra: Any) -> dict[str, Any]:
    task = {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "waves on a quiet beach", "width": 720, "height": 720,
            "duration": 5, "includeCost": True}
    task.update(extra)
    return task


def _poll_all(http: httpx.Client, uuids: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    """getResponse for many tasks per request until each has its success item."""
    done: dict[str, list[dict[str, Any]]] = {u: [] for u in uuids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [u for u, items in done.items() if not items]
        if not pending:
            return done
        for start in range(0, len(pending), 50):
            batch = pending[start:start + 50]
            body = runware(http, [{"taskType": "getResponse", "taskUUID": u} for u in batch]).json()
            assert not body.get("errors"), body["errors"]
            for item in body["data"]:
                if item["status"] == "success":
                    done[item["taskUUID"]].append(item)
        time.sleep(0.3)
    missing = [u for u, items in done.items() if not items]
    raise AssertionError(f"{len(missing)} task(s) did not complete within {timeout} s")


@pytest.mark.slow
def test_kill_9_mid_job_then_restart_completes_every_accepted_task(
    server_factory: ServerFactory,
) -> None:
    env = {"REELSERVE_LEASE_SECONDS": "1.5", "REELSERVE_WORKERS": "1"}
    first = server_factory(env=env)
    tasks = [_task(duration=10), _task(numberResults=2), _task()]
    with httpx.Client(base_url=first.url, timeout=60) as http:
        for task in tasks:
            assert runware(http, [task]).status_code == 200
        # Wait until the first job is really running (progress reported), then kill -9.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            item = runware(http, [{"taskType": "getResponse",
                                   "taskUUID": tasks[0]["taskUUID"]}]).json()["data"][0]
            if item["status"] == "processing" and item["progress"] > 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the first job never reported progress")
    first.kill()
    second = server_factory(env=env, data_dir=first.data_dir)
    with httpx.Client(base_url=second.url, timeout=60) as http:
        uuids = [t["taskUUID"] for t in tasks]
        done = _poll_all(http, uuids, timeout=240)
        # numberResults 2 answers "processing" until both exist, then both at once.
        assert {u: len(items) for u, items in done.items()} == {
            uuids[0]: 1, uuids[1]: 2, uuids[2]: 1}
        for items in done.values():
            for item in items:
                assert http.get(item["videoURL"]).status_code == 200
                assert item["cost"] == 0.1848


@pytest.mark.slow
def test_200_concurrent_async_submits(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector",
                              "REELSERVE_WORKERS": "2",
                              # per-key limits are tested with the rate limiter, not here
                              "REELSERVE_RATE_SUBMITS_PER_MINUTE": "0",
                              "REELSERVE_RATE_MAX_IN_FLIGHT": "0"})
    tasks = [_task() for _ in range(200)]

    async def submit_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=srv.url, timeout=60, limits=limits) as http:
            return await asyncio.gather(*(http.post("/v1", json=[t]) for t in tasks))

    responses = asyncio.run(submit_all())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
    acked = [r.json()["data"][0]["taskUUID"] for r in responses]
    assert sorted(acked) == sorted(t["taskUUID"] for t in tasks)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        done = _poll_all(http, acked, timeout=280)
        assert all(len(items) == 1 for items in done.values())
        video_uuids = [items[0]["videoUUID"] for items in done.values()]
        assert len(set(video_uuids)) == 200
        # Nothing is delivered twice.
        body = runware(http, [{"taskType": "getResponse", "taskUUID": u} for u in acked[:50]]).json()
        assert body["data"] == []
