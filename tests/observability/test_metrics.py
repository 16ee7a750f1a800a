"""Prometheus metrics of the deployment, read from the job store, parsed with prometheus-client's
own parser after real jobs ran through two ``reelserve worker`` processes."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.observability.metrics import BUCKETS, render
from reelserve_testing import ServerFactory, WorkerProcess, poll_results, runware

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def hook_receiver() -> Iterator[tuple[str, list[int]]]:
    """A webhook receiver on a free loopback port: the first POST gets 503, the rest 200."""
    answers: list[int] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                status = 503 if not answers else 200
                answers.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", answers
    finally:
        httpd.shutdown()
        httpd.server_close()


def _samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_after_jobs_ran_through_two_worker_processes(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared"
    env = {"REELSERVE_ENGINE_SELECTOR": "tiny_engine:slow_engine_selector",
           "REELSERVE_OUTBOUND_ALLOW": "127.0.0.1",
           "REELSERVE_DELIVERY_BACKOFF_BASE": "0.2",
           "REELSERVE_DELIVERY_POLL_INTERVAL": "0.1"}
    tasks = [{"taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
              "model": "klingai:1@1", "positivePrompt": f"metrics {i}", "width": 720,
              "height": 720, "duration": 5, "deliveryMethod": "async"} for i in range(4)]
    with hook_receiver() as (hook_url, answers):
        # The server renders nothing (no worker threads): two worker processes do.
        server = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=data_dir)
        workers = [WorkerProcess(data_dir, {**env, "REELSERVE_WORKERS": "1"},
                                 f"worker-{i}").start() for i in range(2)]
        try:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                tasks[0]["webhookURL"] = hook_url
                ack = runware(http, tasks)
                assert ack.status_code == 200, ack.text
                for task in tasks:
                    items, errors = poll_results(http, task["taskUUID"], timeout=120)
                    assert errors == [] and len(items) == 1, \
                        f"{errors}\n{workers[0].log()}\n{workers[1].log()}"
            deadline = time.monotonic() + 30
            while answers.count(200) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answers[:2] == [503, 200], server.log()
        finally:
            for worker in workers:
                worker.stop()

    # Read by this process, which ran none of it: the numbers are the deployment's.
    store = SQLiteJobStore(data_dir / "reelserve.db")
    try:
        text = render(store).decode()
    finally:
        store.close()
    families = _samples(text)
    jobs = families["reelserve_jobs"]
    for state in ("queued", "running"):
        assert _value(jobs, "reelserve_jobs", state=state) == 0
    finished = families["reelserve_jobs_finished"]
    assert _value(finished, "reelserve_jobs_finished_total", outcome="succeeded") == 4
    for outcome in ("failed", "cancelled"):
        assert _value(finished, "reelserve_jobs_finished_total", outcome=outcome) == 0
    assert families["reelserve_queue_depth"] == []  # nothing queued
    assert _value(families["reelserve_results"], "reelserve_results_total") == 4
    assert _value(families["reelserve_workers_busy"], "reelserve_workers_busy") == 0
    assert families["reelserve_deliveries_pending"] == []
    outbox = families["reelserve_deliveries"]
    assert _value(outbox, "reelserve_deliveries_total", kind="webhook", state="delivered") == 1
    assert _value(families["reelserve_delivery_attempts"], "reelserve_delivery_attempts_total",
                  kind="webhook") == 2
    assert _value(families["reelserve_delivery_failed_attempts"],
                  "reelserve_delivery_failed_attempts_total", kind="webhook") == 1

    expected = {"queue_wait": 4, "run": 4, "render": 4, "encode": 4, "delivery": 1}
    for name, count in expected.items():
        family = f"reelserve_{name}_seconds"
        samples = families[family]
        assert _value(samples, f"{family}_count") == count, name
        buckets = [s for s in samples if s.name == f"{family}_bucket"]
        assert [float(s.labels["le"]) for s in buckets] == [*BUCKETS, float("inf")]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and counts[-1] == count, (name, counts)
        assert _value(samples, f"{family}_sum") > 0, name
    # the slow tiny engine renders for a while: its time is in render (or encode), not in 0
    run_sum = _value(families["reelserve_run_seconds"], "reelserve_run_seconds_sum")
    assert run_sum >= _value(families["reelserve_render_seconds"], "reelserve_render_seconds_sum")
