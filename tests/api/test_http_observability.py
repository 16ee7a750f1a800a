"""``GET /metrics``, ``/health``, ``/ready`` and the access log over HTTP.

``/metrics`` is scraped from a server that renders nothing (``REELSERVE_WORKERS=0``) after jobs
ran through two ``reelserve worker`` processes on the same data dir, and parsed with
prometheus-client's own parser: the numbers are the deployment's, not the scraped process's.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from reelserve.api.app import create_app
from reelserve.settings import Settings
from reelserve_testing import ServerFactory, WorkerProcess, poll_results, runware


def _families(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def _settled_ready(url: str, timeout: float = 60.0) -> httpx.Response:
    """``/ready`` once the worker slots are past starting/loading (the prepare thread ran)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = httpx.get(f"{url}/ready", timeout=30)
        state = resp.json()["workers"]["state"]
        if state not in ("starting", "loading") or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)


@pytest.mark.slow
def test_metrics_endpoint_after_jobs_ran_through_two_worker_processes(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    env = {"REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"}
    server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
    workers = [WorkerProcess(data_dir, {**env, "REELSERVE_WORKERS": "1"}, f"worker-{i}").start()
               for i in range(2)]
    tasks = [{"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
              "model": "klingai:1@1", "positivePrompt": f"scrape {i}", "width": 720,
              "height": 720, "duration": 5} for i in range(3)]
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            ack = runware(http, tasks)
            assert ack.status_code == 200, ack.text
            for task in tasks:
                items, errors = poll_results(http, task["taskUUID"], timeout=120)
                assert errors == [] and len(items) == 1, f"{errors}\n{workers[0].log()}"
            resp = http.get("/metrics", headers={"X-Request-ID": "scrape-1"})
            ready = http.get("/ready")
    finally:
        for worker in workers:
            worker.stop()
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["x-request-id"] == "scrape-1"
    families = _families(resp.text)
    finished = families["reelserve_jobs_finished"]
    assert _value(finished, "reelserve_jobs_finished_total", outcome="succeeded") == 3
    assert _value(families["reelserve_results"], "reelserve_results_total") == 3
    for state in ("queued", "running"):
        assert _value(families["reelserve_jobs"], "reelserve_jobs", state=state) == 0
    assert _value(families["reelserve_render_seconds"], "reelserve_render_seconds_count") == 3
    assert _value(families["reelserve_queue_wait_seconds"],
                  "reelserve_queue_wait_seconds_count") == 3
    # this process runs no slots of its own: its process gauges say so
    assert _value(families["reelserve_process_worker_slots"],
                  "reelserve_process_worker_slots") == 0
    assert _value(families["reelserve_process_ready"], "reelserve_process_ready") == 1
    # ready: the store answers, no slots here, and the two worker processes are alive
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["ready"] is True and body["store"]["reachable"] is True
    assert (body["workers"]["slots"], body["workers"]["live"]) == (0, 2)
    # with the workers gone (stopped: they leave the store), nobody renders: not ready
    resp = httpx.get(f"{server.url}/ready", timeout=30)
    assert resp.status_code == 503, resp.text
    assert any("no worker" in reason for reason in resp.json()["reasons"])


def test_ready_reports_slots_and_refuses_when_they_cannot_render(
    server_factory: ServerFactory,
) -> None:
    good = server_factory(env={"REELSERVE_WORKERS": "2",
                               "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"})
    body = _settled_ready(good.url).json()
    assert body["ready"] is True and body["reasons"] == []
    assert (body["workers"]["slots"], body["workers"]["alive"]) == (2, 2)
    assert body["workers"]["state"] == "ready"
    health = httpx.get(f"{good.url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    slots = _families(httpx.get(f"{good.url}/metrics", timeout=30).text)
    assert _value(slots["reelserve_process_worker_slots_alive"],
                  "reelserve_process_worker_slots_alive") == 2

    # An engine selector that cannot be built: the slots can render nothing.
    bad = server_factory(env={"REELSERVE_WORKERS": "1",
                              "REELSERVE_ENGINE_SELECTOR": "tiny_engine:no_such_selector"})
    resp = _settled_ready(bad.url)
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["ready"] is False and body["workers"]["state"] == "failed"
    assert any("failed" in reason for reason in body["reasons"])
    assert httpx.get(f"{bad.url}/health", timeout=30).status_code == 200  # alive, not ready


def test_access_log_line_per_request_with_request_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(data_dir=tmp_path, workers=0))
    with TestClient(app) as http, caplog.at_level(logging.INFO, logger="reelserve.access"):
        given = http.get("/v1/tasks", headers={"X-Request-ID": "client-42"})
        fresh = http.get("/v1/videos/video_missing")
        forged = http.get("/health", headers={"X-Request-ID": "a b\r\nforged"})
        refused = http.put("/v1/videos")
    assert given.headers["x-request-id"] == "client-42"
    minted = fresh.headers["x-request-id"]
    assert len(minted) == 32 and minted != "client-42"
    assert forged.headers["x-request-id"] != "a b\r\nforged"  # not echoed: a new id instead
    lines = [r.getMessage() for r in caplog.records if r.name == "reelserve.access"]
    assert len(lines) == 4, lines
    assert lines[0].startswith("GET /v1/tasks 200 ") and lines[0].endswith("rid=client-42")
    assert lines[1].startswith("GET /v1/videos/video_missing 404 ") and minted in lines[1]
    assert lines[3].startswith("PUT /v1/videos 405 ")
    assert refused.headers["x-request-id"] in lines[3]
