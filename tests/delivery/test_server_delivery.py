"""Delivery end to end: a real ``reelserve serve``, real local receivers, real files.

The server runs with ``REELSERVE_OUTBOUND_ALLOW=127.0.0.1`` so it may call the receivers on this
machine (everything internal stays refused otherwise).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from receiver_helpers import Receiver

from reelserve.delivery import open_artifacts, webhook
from reelserve.delivery.sweeper import Sweeper
from reelserve.jobs.sqlite import SQLiteJobStore
from reelserve.settings import Settings

ServerFactory = Callable[..., Any]  # tests/conftest.py's real-server fixture

SECRET = "whsec-test"
URL_SECRET = "url-secret-test"
ENV = {
    "REELSERVE_WORKERS": "1",
    "REELSERVE_OUTBOUND_ALLOW": "127.0.0.1",
    "REELSERVE_WEBHOOK_SECRET": SECRET,
    "REELSERVE_URL_SECRET": URL_SECRET,
    "REELSERVE_DELIVERY_BACKOFF_BASE": "0.3",
    "REELSERVE_DELIVERY_BACKOFF_MAX": "1",
    "REELSERVE_DELIVERY_POLL_INTERVAL": "0.1",
    "REELSERVE_OUTBOUND_TOTAL_TIMEOUT": "5",
    "REELSERVE_OUTBOUND_CONNECT_TIMEOUT": "2",
}


def video_task(**extra: Any) -> dict[str, Any]:
    return {
        "taskType": "videoInference",
        "taskUUID": str(uuid.uuid4()),
        "model": "klingai:1@1",
        "positivePrompt": "a red fox running through snow",
        "duration": 5,
        "width": 720,
        "height": 720,
        "deliveryMethod": "async",
        **extra,
    }


def runware(http: httpx.Client, tasks: list[dict[str, Any]]) -> httpx.Response:
    return http.post("/v1", json=tasks)


def submit(http: httpx.Client, task: dict[str, Any]) -> None:
    resp = runware(http, [task])
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] == [{"taskType": "videoInference", "taskUUID": task["taskUUID"]}]


def details(http: httpx.Client, task_uuid: str) -> dict[str, Any]:
    resp = runware(http, [{"taskType": "getTaskDetails", "taskUUID": task_uuid}])
    assert resp.status_code == 200, resp.text
    item: dict[str, Any] = resp.json()["data"][0]
    return item


def test_webhook_retried_then_each_result_delivered_once_signed(
    server_factory: ServerFactory, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    srv = server_factory(env=ENV)
    task = video_task(numberResults=2, webhookURL=f"{receiver.url}/hook?src=test")
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        submit(http, task)
        assert receiver.wait_for(lambda r: len(r.accepted()) >= 2, 120), srv.log()
        time.sleep(1.0)  # nothing more arrives
        accepted = receiver.accepted()
        assert len(accepted) == 2
        items = [json.loads(r.body)["data"] for r in accepted]
        assert all(len(i) == 1 for i in items)
        uuids = {i[0]["videoUUID"] for i in items}
        assert len(uuids) == 2
        for [item] in items:
            assert item["taskType"] == "videoInference" and item["taskUUID"] == task["taskUUID"]
            assert item["videoURL"].startswith(srv.url + "/media/outputs/")
        for r in receiver.seen:
            assert r.path == "/hook?src=test"
            assert webhook.verify(SECRET, r.body, r.headers), r.headers
        assert len(receiver.seen) == 4
        info = details(http, task["taskUUID"])
        hooks = info["deliveries"]
        assert [h["state"] for h in hooks] == ["delivered", "delivered"]
        assert sum(h["attempts"] for h in hooks) == 4
        assert all(h["type"] == "webhookURL" for h in hooks)


def test_failure_is_posted_too(server_factory: ServerFactory, receiver: Receiver) -> None:
    srv = server_factory(env=ENV)
    # The first frame sits on a private address: the worker's fetch is refused by the netguard.
    task = video_task(
        inputs={"frameImages": ["http://10.0.0.1/frame.png"]}, webhookURL=f"{receiver.url}/hook"
    )
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        submit(http, task)
        assert receiver.wait_for(lambda r: len(r.accepted()) >= 1, 60), srv.log()
        [item] = json.loads(receiver.accepted()[0].body)["data"]
        assert item["taskUUID"] == task["taskUUID"] and item["status"] == "error"
        assert item["code"] == "blockedAddress" and "10.0.0.1" in item["message"]


def test_restart_during_retries_still_delivers(
    server_factory: ServerFactory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.accept = False
    data_dir = tmp_path / "shared-data"
    first = server_factory(env=ENV, data_dir=data_dir)
    task = video_task(webhookURL=f"{receiver.url}/hook")
    with httpx.Client(base_url=first.url, timeout=60) as http:
        submit(http, task)
    assert receiver.wait_for(lambda r: len(r.seen) >= 2, 120), first.log()
    time.sleep(0.1)  # let it record that attempt; the next retry is >= 0.3 s away
    first.kill()  # kill -9 between retries: nothing gets to clean up
    seen_before = len(receiver.seen)
    receiver.accept = True
    second = server_factory(env=ENV, data_dir=data_dir)
    assert receiver.wait_for(lambda r: len(r.accepted()) >= 1, 60), second.log()
    time.sleep(1.0)
    assert len(receiver.accepted()) == 1
    assert len(receiver.seen) > seen_before
    ids = {r.headers[webhook.DELIVERY_HEADER] for r in receiver.seen}
    assert len(ids) == 1  # the same delivery, retried across the restart
    with httpx.Client(base_url=second.url, timeout=60) as http:
        [hook] = details(http, task["taskUUID"])["deliveries"]
    # At least once: an attempt cut off by the kill may be sent but not recorded.
    assert hook["state"] == "delivered"
    assert len(receiver.seen) - 1 <= hook["attempts"] <= len(receiver.seen)


def test_upload_endpoint_gets_the_exact_bytes_and_type(
    server_factory: ServerFactory, receiver: Receiver
) -> None:
    receiver.fail_first = 1
    srv = server_factory(env=ENV)
    task = video_task(outputFormat="WEBM", uploadEndpoint=f"{receiver.url}/bucket/out.webm?X-Sig=1")
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        submit(http, task)
        assert receiver.wait_for(lambda r: len(r.accepted()) >= 1, 120), srv.log()
        [put] = receiver.accepted()
        assert put.method == "PUT" and put.path == "/bucket/out.webm?X-Sig=1"
        assert put.headers["Content-Type"] == "video/webm"
        info = details(http, task["taskUUID"])
        [result] = info["response"]["data"]
        served = http.get(result["videoURL"])
        assert served.status_code == 200
        assert put.body == served.content and len(put.body) > 1000
        assert put.body[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
        [up] = info["deliveries"]
        assert up["type"] == "uploadEndpoint" and up["state"] == "delivered"
        assert up["attempts"] == 2 and up["history"][0]["status"] == 503


def test_output_url_expires_and_tampering_never_works(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    from reelserve.api.media import UrlSigner

    data_dir = tmp_path / "expiry-data"
    srv = server_factory(env=ENV, data_dir=data_dir)
    task = video_task(ttl=60, deliveryMethod="sync")
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        resp = runware(http, [task])
        assert resp.status_code == 200, resp.text
        url = resp.json()["data"][0]["videoURL"]
        assert http.get(url).status_code == 200
        parsed = httpx.URL(url)
        exp, sig = parsed.params["exp"], parsed.params["sig"]
        assert int(exp) - time.time() <= 61  # ttl 60 s honoured

        def with_params(**p: str) -> str:
            return str(parsed.copy_merge_params(p))

        flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
        for bad in (
            with_params(sig=flipped),
            with_params(exp=str(int(exp) + 3600)),
            with_params(sig=""),
            url.split("?")[0],
        ):
            got = http.get(bad)
            assert got.status_code == 404 and got.content[:4] != b"\x00\x00\x00\x20"
        # The same key signed with an expiry in the past: a clear 410, never the file.
        key = parsed.path.removeprefix("/media/").rsplit(".", 1)[0]
        signer = UrlSigner(URL_SECRET.encode(), srv.url)
        expired = signer.url(key, "mp4", time.time() - 1)
        assert http.get(expired).status_code == 410

        # The sweeper (driven with an explicit clock) removes the file once the ttl is over.
        settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
        store = SQLiteJobStore(data_dir / "reelserve.db")
        try:
            sweeper = Sweeper(settings, store, open_artifacts(settings))
            assert sweeper.sweep(now=time.time() + 30).outputs == 0
            assert http.get(url).status_code == 200
            assert sweeper.sweep(now=time.time() + 61).outputs == 1
            assert sweeper.sweep(now=time.time() + 61).outputs == 0  # marked, not revisited
        finally:
            store.close()
        gone = http.get(url)
        assert gone.status_code in (404, 410) and len(gone.content) < 200


def test_rate_limits_refuse_with_rate_limit_exceeded(server_factory: ServerFactory) -> None:
    srv = server_factory(
        env={
            "REELSERVE_WORKERS": "0",  # nothing runs: tasks stay in flight
            "REELSERVE_API_KEYS": "key-a,key-b",
            "REELSERVE_RATE_MAX_IN_FLIGHT": "2",
            "REELSERVE_RATE_SUBMITS_PER_MINUTE": "3",
        }
    )

    def client(key: str) -> httpx.Client:
        return httpx.Client(
            base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )

    with client("key-a") as a, client("key-b") as b:
        submit(a, video_task())
        submit(a, video_task())
        third = video_task()
        resp = runware(a, [third])
        [err] = resp.json()["errors"]
        assert err["code"] == "rateLimitExceeded"
        assert err["taskUUID"] == third["taskUUID"] and err["taskType"] == "videoInference"
        assert "in flight" in err["message"] and "2" in err["message"]
        # other keys are not affected
        first_b = video_task()
        submit(b, first_b)
        # a resubmitted taskUUID is refused as a conflict but still counts per minute
        for _ in range(2):
            again = runware(b, [first_b]).json()["errors"][0]
            assert again["code"] == "conflictTaskUUID"
        fourth = video_task()
        err = runware(b, [fourth]).json()["errors"][0]
        assert err["code"] == "rateLimitExceeded" and err["taskUUID"] == fourth["taskUUID"]
        assert "per minute" in err["message"]


def test_internal_webhook_targets_are_never_called(server_factory: ServerFactory) -> None:
    env = {k: v for k, v in ENV.items() if k != "REELSERVE_OUTBOUND_ALLOW"}
    srv = server_factory(env=env)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        # IP literals and bad URLs are refused at submit time, naming the field.
        for field, bad, code in (
            ("webhookURL", "http://169.254.169.254/latest", "blockedAddress"),
            ("webhookURL", "http://2130706433:9/hook", "blockedAddress"),
            ("uploadEndpoint", "http://[::1]/put", "blockedAddress"),
            ("webhookURL", "http://user:pw@example.com/hook", "invalidURL"),
        ):
            task = video_task(**{field: bad})
            [err] = runware(http, [task]).json()["errors"]
            assert (err["code"], err["parameter"]) == (code, field), err
            assert err["taskUUID"] == task["taskUUID"]
        # A name that resolves to loopback passes the submit check; the delivery is refused.
        task = video_task(webhookURL="http://localhost:9/hook")
        submit(http, task)
        deadline = time.monotonic() + 120
        hooks: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            hooks = details(http, task["taskUUID"])["deliveries"]
            if hooks and hooks[0]["state"] != "pending":
                break
            time.sleep(0.3)
        [hook] = hooks
        assert hook["state"] == "failed" and hook["attempts"] == 1
        assert hook["lastError"].startswith("blockedAddress")
        assert "resolves to" in hook["lastError"]
