"""The dispatcher against a real store, real files and a real local receiver."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from receiver_helpers import Receiver

from reelserve.api.runware.render import describe_deliveries as describe
from reelserve.delivery import webhook
from reelserve.delivery.dispatcher import Dispatcher, StatusEvent
from reelserve.delivery.storage import LocalArtifactStore
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.settings import Settings
from reelserve.tasks import Delivery, GenerationSpec, Job, Result, Workflow

SECRET = "s3cret"


def settings(tmp: Path, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": tmp,
        "webhook_secret": SECRET,
        "outbound_allow": ["127.0.0.1"],
        "delivery_backoff_base": 0.05,
        "delivery_backoff_max": 0.2,
        "delivery_poll_interval": 0.05,
        "delivery_timeout": 2.0,
    }
    base.update(kw)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteJobStore]:
    st = SQLiteJobStore(tmp_path / "jobs.db")
    yield st
    st.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def renderer(job: Job, result: Result | None) -> dict[str, Any]:
    if result is None:
        return {"data": [{"taskUUID": job.task_uuid, "status": "error", **(job.error or {})}]}
    return {"data": [{"taskUUID": job.task_uuid, "videoUUID": result.video_uuid}]}


def finished_job(
    store: SQLiteJobStore,
    artifacts: LocalArtifactStore,
    *,
    hook: str | None,
    put: str | None = None,
    results: int = 2,
) -> tuple[Job, list[bytes]]:
    """A job that ran and stored ``results`` outputs (what the worker does)."""
    task_uuid = str(uuid.uuid4())
    spec = GenerationSpec(
        task_uuid=task_uuid,
        model="klingai:1@1",
        workflow=Workflow.T2V,
        width=1280,
        height=720,
        fps=30,
        duration=5.0,
        seeds=list(range(results)),
        delivery=Delivery(webhook_url=hook, upload_endpoint=put),
    )
    job = store.create(Job(id=str(uuid.uuid4()), task_uuid=task_uuid, owner="o", spec=spec))
    assert store.claim("w", 30) is not None
    blobs = []
    for i in range(results):
        data = bytes([i]) * 1000 + uuid.uuid4().bytes
        info = artifacts.put_bytes(
            f"outputs/{uuid.uuid4()}", data, content_type="video/webm", owner="o", extension="webm"
        )
        store.add_result(
            job.id,
            "w",
            Result(
                index=i,
                video_uuid=info.key.split("/")[1],
                seed=i,
                artifact_key=info.key,
                content_type="video/webm",
                size_bytes=len(data),
                width=1280,
                height=720,
                fps=30.0,
                num_frames=150,
                duration=5.0,
            ),
        )
        blobs.append(data)
    store.finish(job.id, "w")
    return job, blobs


def drain(d: Dispatcher, store: SQLiteJobStore, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d.run_once()
        if all(r.state != "pending" for r in store.deliveries(job_id)):
            return
        time.sleep(0.02)
    raise AssertionError(f"still pending: {store.deliveries(job_id)}")


def test_retries_until_accepted_then_exactly_once_signed(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    receiver.fail_first = 3
    d = Dispatcher(settings(tmp_path), store, artifacts)
    d.register_renderer("runware", renderer)
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/hook")
    drain(d, store, job.id)
    accepted = receiver.accepted()
    assert len(accepted) == 2  # one per result, each once
    videos = sorted(json.loads(r.body)["data"][0]["videoUUID"] for r in accepted)
    assert videos == sorted(r.video_uuid for r in store.get(job.id).results)  # type: ignore[union-attr]
    assert len(receiver.seen) == 5
    for r in receiver.seen:
        assert webhook.verify(SECRET, r.body, r.headers)
        assert r.headers["Content-Type"] == "application/json"
    # the delivery id is stable across retries; attempts count up
    by_id: dict[str, list[int]] = {}
    for r in receiver.seen:
        by_id.setdefault(r.headers[webhook.DELIVERY_HEADER], []).append(
            int(r.headers[webhook.ATTEMPT_HEADER])
        )
    assert all(v == list(range(1, len(v) + 1)) for v in by_id.values())
    rows = describe(store.deliveries(job.id))
    assert {r["state"] for r in rows} == {"delivered"}
    assert sum(r["attempts"] for r in rows) == 5
    assert any(h.get("status") == 503 for r in rows for h in r["history"])


def test_a_tampered_body_or_old_timestamp_fails_verification() -> None:
    body = b'{"data":[1]}'
    headers = webhook.signed_headers(body, secret=SECRET, delivery_id="d", attempt=1)
    assert webhook.verify(SECRET, body, headers)
    assert not webhook.verify(SECRET, body + b" ", headers)
    assert not webhook.verify("other", body, headers)
    assert not webhook.verify(SECRET, body, {**headers, webhook.SIGNATURE_HEADER: "v1,AAAA"})
    assert not webhook.verify(SECRET, body, {**headers, webhook.DELIVERY_HEADER: "other"})
    assert not webhook.verify(SECRET, body, headers, now=time.time() + 301)
    unsigned = webhook.signed_headers(body, secret=None, delivery_id="d", attempt=1)
    assert webhook.SIGNATURE_HEADER not in unsigned
    # the Standard Webhooks recipe: base64 HMAC-SHA256 over "<id>.<timestamp>.<body>", keyed
    # with the secret's bytes (an operator's own secret; a whsec_ one is base64 of the key)
    import base64
    import hashlib
    import hmac

    ts = headers[webhook.TIMESTAMP_HEADER]
    mac = hmac.new(SECRET.encode(), b"d." + ts.encode() + b"." + body, hashlib.sha256).digest()
    assert headers[webhook.SIGNATURE_HEADER] == "v1," + base64.b64encode(mac).decode()
    # and any Standard Webhooks library verifies it with the whsec_ form of the secret
    from standardwebhooks import Webhook, WebhookVerificationError

    standard = webhook.standard_secret(SECRET)
    assert standard.startswith("whsec_")
    assert Webhook(standard).verify(body, headers) == {"data": [1]}
    with pytest.raises(WebhookVerificationError):
        Webhook(standard).verify(body + b" ", headers)


def test_standard_webhooks_receiver_verifies_across_a_retry(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    """No REELSERVE_WEBHOOK_SECRET: a secret is generated and kept in the data dir; a receiver
    verifying with the ``standardwebhooks`` library accepts every attempt, and a retry carries
    the same webhook-id with a fresh valid signature."""
    from standardwebhooks import Webhook

    receiver.fail_first = 1
    d = Dispatcher(settings(tmp_path, webhook_secret=None), store, artifacts)
    d.register_renderer("runware", renderer)
    kept = (tmp_path / webhook.SECRET_FILE).read_text().strip()
    assert d.secret == kept and kept.startswith("whsec_")
    assert (tmp_path / webhook.SECRET_FILE).stat().st_mode & 0o077 == 0  # owner only
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/hook", results=1)
    drain(d, store, job.id)
    assert [r.answered for r in receiver.seen] == [503, 200]
    first, retry = receiver.seen
    hook = Webhook(kept)
    for r in (first, retry):
        payload = hook.verify(r.body, r.headers)
        assert payload["data"][0]["taskUUID"] == job.task_uuid
    assert first.headers[webhook.DELIVERY_HEADER] == retry.headers[webhook.DELIVERY_HEADER]
    assert first.headers[webhook.DELIVERY_HEADER] == f"{job.id}:webhook:0"
    assert [r.headers[webhook.ATTEMPT_HEADER] for r in (first, retry)] == ["1", "2"]
    # a restart (a new dispatcher on the same data dir) signs with the same kept secret
    again = Dispatcher(settings(tmp_path, webhook_secret=None), store, artifacts)
    assert again.secret == kept
    # and a configured secret wins over the kept one
    own = Dispatcher(settings(tmp_path, webhook_secret="whsec_" + "A" * 32), store, artifacts)
    assert own.secret == "whsec_" + "A" * 32


def test_failure_webhook(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    d = Dispatcher(settings(tmp_path), store, artifacts)
    d.register_renderer("runware", renderer)
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/h", results=0)
    # finished_job finished it; make another that fails
    spec = job.spec.model_copy(update={"task_uuid": "t-fail"})
    failing = store.create(Job(id="j-fail", task_uuid="t-fail", owner="o", spec=spec))
    assert store.claim("w", 30) is not None
    store.fail(failing.id, "w", {"code": "engineError", "message": "boom", "kind": "internal"})
    drain(d, store, failing.id)
    [got] = receiver.accepted()
    assert json.loads(got.body) == {
        "data": [
            {
                "taskUUID": "t-fail",
                "status": "error",
                "code": "engineError",
                "message": "boom",
                "kind": "internal",
            }
        ]
    }


def test_upload_put_gets_exact_bytes_and_type(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    d = Dispatcher(settings(tmp_path), store, artifacts)
    job, blobs = finished_job(store, artifacts, hook=None, put=f"{receiver.url}/bucket/x?sig=a")
    drain(d, store, job.id)
    puts = receiver.accepted()
    assert sorted(p.body for p in puts) == sorted(blobs)
    for p in puts:
        assert p.method == "PUT" and p.path == "/bucket/x?sig=a"
        assert p.headers["Content-Type"] == "video/webm"
        assert int(p.headers["Content-Length"]) == len(p.body)


def test_gives_up_after_the_window(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    receiver.accept = False
    d = Dispatcher(settings(tmp_path, delivery_retry_window=0.3), store, artifacts)
    d.register_renderer("runware", renderer)
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/h", results=1)
    drain(d, store, job.id)
    [row] = store.deliveries(job.id)
    assert row.state == "failed" and row.last_status == 503
    assert 2 <= row.attempts <= 6  # backoff 0.05, 0.1, 0.2 ... within 0.3 s
    assert receiver.accepted() == []


def test_refused_url_fails_at_once_without_connecting(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    d = Dispatcher(settings(tmp_path, outbound_allow=[]), store, artifacts)
    d.register_renderer("runware", renderer)
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/h", results=1)
    drain(d, store, job.id)
    [row] = store.deliveries(job.id)
    assert row.state == "failed" and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("blockedAddress")
    assert receiver.seen == []


def test_restart_during_retries_still_delivers(
    tmp_path: Path, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    receiver.accept = False
    first = SQLiteJobStore(tmp_path / "jobs.db")
    d1 = Dispatcher(settings(tmp_path), first, artifacts)
    d1.register_renderer("runware", renderer)
    job, _ = finished_job(first, artifacts, hook=f"{receiver.url}/h", results=1)
    d1.start()
    assert receiver.wait_for(lambda r: len(r.seen) >= 2, 10)
    d1.stop()
    first.close()  # "process" gone
    receiver.accept = True
    second = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        d2 = Dispatcher(settings(tmp_path), second, artifacts)
        d2.register_renderer("runware", renderer)
        d2.start()
        assert receiver.wait_for(lambda r: len(r.accepted()) == 1, 10)
        d2.stop()
        time.sleep(0.2)
        assert len(receiver.accepted()) == 1
        [row] = second.deliveries(job.id)
        assert row.state == "delivered" and row.attempts == len(receiver.seen)
    finally:
        second.close()


def test_renderer_may_skip_and_missing_renderer_fails(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    d = Dispatcher(settings(tmp_path), store, artifacts)
    job, _ = finished_job(store, artifacts, hook=f"{receiver.url}/h", results=1)
    drain(d, store, job.id)
    assert store.deliveries(job.id)[0].state == "failed"  # nobody registered "runware"
    d.register_renderer("runware", lambda job, result: None)
    job2, _ = finished_job(store, artifacts, hook=f"{receiver.url}/h", results=1)
    drain(d, store, job2.id)
    assert store.deliveries(job2.id)[0].state == "skipped"
    assert receiver.seen == []


def test_backoff_grows_and_is_capped(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore
) -> None:
    d = Dispatcher(
        settings(tmp_path, delivery_backoff_base=1, delivery_backoff_max=30), store, artifacts
    )
    delays = [d.backoff(n) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        assert 0.9 * min(30, 2 ** (n - 1)) <= delay <= 1.1 * min(30, 2 ** (n - 1))


def test_status_changes_are_posted_in_order_rendered_at_each_event(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    receiver.fail_first = 2  # the first status is retried; the later ones wait behind it
    d = Dispatcher(settings(tmp_path), store, artifacts)

    def status_renderer(job: Job, event: StatusEvent) -> dict[str, Any]:
        return {"id": job.id, "status": event.status.value, "at": event.at, "now": job.status.value}

    d.register_status_renderer("dialect-x", status_renderer)
    spec = GenerationSpec(
        task_uuid="t-status", model="klingai:1@1", workflow=Workflow.T2V, width=1280, height=720,
        fps=30, duration=5.0, seeds=[1],
        delivery=Delivery(status_url=f"{receiver.url}/status?k=1"),
    )
    job = store.create(Job(id="j-status", task_uuid="t-status", owner="o", origin="dialect-x",
                           spec=spec))
    assert store.claim("w", 30) is not None
    assert store.finish(job.id, "w")
    drain(d, store, job.id)
    bodies = [json.loads(r.body) for r in receiver.accepted()]
    # Every event rendered as it was, although the job had finished before any was sent.
    assert [b["status"] for b in bodies] == ["queued", "running", "succeeded"]
    assert {b["now"] for b in bodies} == {"succeeded"}
    rows = store.deliveries(job.id)
    assert [b["at"] for b in bodies] == [r.created_at for r in rows]
    assert [r.path for r in receiver.seen] == ["/status?k=1"] * 5
    assert all(webhook.verify(SECRET, r.body, r.headers) for r in receiver.seen)
    ids = [r.headers[webhook.DELIVERY_HEADER] for r in receiver.accepted()]
    assert ids == [f"{job.id}:status:{s}" for s in ("queued", "running", "succeeded")]
    described = describe(rows)
    assert [(x["type"], x["event"], x["state"]) for x in described] == [
        ("statusCallback", "queued", "delivered"),
        ("statusCallback", "running", "delivered"),
        ("statusCallback", "succeeded", "delivered"),
    ]
    assert described[0]["attempts"] == 3


def test_status_change_without_a_status_renderer_fails(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore, receiver: Receiver
) -> None:
    d = Dispatcher(settings(tmp_path), store, artifacts)
    d.register_renderer("runware", renderer)  # a result renderer is not a status renderer
    spec = GenerationSpec(
        task_uuid="t-x", model="klingai:1@1", workflow=Workflow.T2V, width=1280, height=720,
        fps=30, duration=5.0, seeds=[1], delivery=Delivery(status_url=f"{receiver.url}/s"),
    )
    job = store.create(Job(id="j-x", task_uuid="t-x", owner="o", spec=spec))
    drain(d, store, job.id)
    [row] = store.deliveries(job.id)
    assert row.state == "failed" and row.attempts == 1
    assert row.last_error is not None and "no status renderer" in row.last_error
    assert receiver.seen == []


def test_cli_prints_the_secret_the_dispatcher_signs_with(
    tmp_path: Path, store: SQLiteJobStore, artifacts: LocalArtifactStore,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reelserve.cli import main

    monkeypatch.delenv("REELSERVE_WEBHOOK_SECRET", raising=False)
    assert main(["webhook-secret", "--data-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("whsec_")
    assert Dispatcher(settings(tmp_path, webhook_secret=None), store, artifacts).secret == printed
