"""Status-change callbacks (Kling ``callback_url``) through the persisted outbox, end to end.

A real ``reelserve serve`` with no Kling keys serves loopback clients as the local owner, so
these tests need no JWT. ``REELSERVE_OUTBOUND_ALLOW=127.0.0.1`` lets it call the local receiver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from receiver_helpers import Receiver

from reelserve.delivery import webhook

ServerFactory = Callable[..., Any]  # tests/conftest.py's real-server fixture

SECRET = "whsec-status"
ENV = {
    "REELSERVE_WORKERS": "1",
    "REELSERVE_OUTBOUND_ALLOW": "127.0.0.1",
    "REELSERVE_WEBHOOK_SECRET": SECRET,
    "REELSERVE_DELIVERY_BACKOFF_BASE": "0.3",
    "REELSERVE_DELIVERY_BACKOFF_MAX": "1",
    "REELSERVE_DELIVERY_POLL_INTERVAL": "0.1",
    "REELSERVE_OUTBOUND_TOTAL_TIMEOUT": "5",
    "REELSERVE_OUTBOUND_CONNECT_TIMEOUT": "2",
}


def create(http: httpx.Client, **extra: Any) -> dict[str, Any]:
    resp = http.post("/v1/videos/text2video", json={"prompt": "a lantern at night",
                                                    "aspect_ratio": "1:1", **extra})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["code"] == 0, body
    data: dict[str, Any] = body["data"]
    return data


def query(http: httpx.Client, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = http.get(f"/v1/videos/text2video/{task_id}").json()["data"]
    return data


def test_restart_during_callback_retries_still_delivers_in_order(
    server_factory: ServerFactory, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.accept = False
    data_dir = tmp_path / "shared-data"
    first = server_factory(env=ENV, data_dir=data_dir)
    with httpx.Client(base_url=first.url, timeout=60) as http:
        task = create(http, callback_url=f"{receiver.url}/kling/cb")
        # The task runs to the end while its first callback ("submitted") keeps failing; the
        # later ones wait behind it in the outbox.
        deadline = time.monotonic() + 240
        while query(http, task["task_id"])["task_status"] not in ("succeed", "failed"):
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.2)
    assert receiver.wait_for(lambda r: len(r.seen) >= 2, 60), first.log()
    time.sleep(0.1)  # let it record that attempt; the next retry is >= 0.3 s away
    first.kill()  # kill -9 between retries: nothing gets to clean up
    refused = list(receiver.seen)
    assert {json.loads(r.body)["task_status"] for r in refused} == {"submitted"}

    receiver.accept = True
    second = server_factory(env=ENV, data_dir=data_dir)
    assert receiver.wait_for(lambda r: len(r.accepted()) >= 3, 60), second.log()
    time.sleep(1.0)  # nothing more arrives
    accepted = receiver.accepted()
    bodies = [json.loads(r.body) for r in accepted]
    assert [b["task_status"] for b in bodies] == ["submitted", "processing", "succeed"]
    assert all(b["task_id"] == task["task_id"] for b in bodies)
    assert "task_result" not in bodies[0] and "task_result" not in bodies[1]
    # Links in the callback come from the server that sent it.
    assert bodies[2]["task_result"]["videos"][0]["url"].startswith(second.url + "/media/")
    for r in receiver.seen:
        assert r.method == "POST" and r.path == "/kling/cb"
        assert webhook.verify(SECRET, r.body, r.headers), r.headers
    # The refused "submitted" attempts and the one accepted after the restart are one delivery.
    first_id = accepted[0].headers[webhook.DELIVERY_HEADER]
    assert {r.headers[webhook.DELIVERY_HEADER] for r in refused} == {first_id}
    assert len({r.headers[webhook.DELIVERY_HEADER] for r in accepted}) == 3


def test_internal_callback_url_is_refused_at_submit(server_factory: ServerFactory) -> None:
    env = {k: v for k, v in ENV.items() if k != "REELSERVE_OUTBOUND_ALLOW"}
    srv = server_factory(env={**env, "REELSERVE_WORKERS": "0"})
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        for bad in ("http://127.0.0.1:9/cb", "http://169.254.169.254/latest",
                    "http://[::ffff:127.0.0.1]/cb", "http://0x7f000001/cb"):
            resp = http.post("/v1/videos/text2video", json={"prompt": "a lantern",
                                                            "callback_url": bad})
            assert resp.status_code == 400, resp.text
            body = resp.json()
            assert body["code"] == 1201 and body["data"] is None
            assert "callback_url" in body["message"], body
        # Nothing was stored for the refused submits.
        listed = http.get("/v1/videos/text2video").json()["data"]
        assert listed == []
