"""``/v1/tasks``: one key's jobs across dialects, paged, filtered, cancelled (real server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from reelserve_testing import ServerFactory, ServerProcess, runware


def _poll(fetch: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
          timeout: float = 60.0, interval: float = 0.05) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _runware_task(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": prompt, "width": 720, "height": 720, "duration": 5, **extra}


# 10 s of 1080p on a Pro model: long enough on the preview engine to be caught running.
LONG_OPENAI = {"model": "klingai:5@3", "prompt": "slow sunset", "seconds": "10",
               "size": "1920x1080"}


def test_list_show_across_dialects_with_paging_and_filter(server_factory: ServerFactory) -> None:
    srv: ServerProcess = server_factory(env={"REELSERVE_API_KEYS": "key-a,key-b",
                                             "REELSERVE_WORKERS": "1"})
    a = {"Authorization": "Bearer key-a"}
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        tasks = [_runware_task(f"boat {i}") for i in range(3)]
        for task in tasks:
            assert runware(http, [task], headers=a).status_code == 200
        video = http.post("/v1/videos", json={"prompt": "a windmill", "size": "720x720"},
                          headers=a).json()
        # Another key's job is never listed for key-a.
        runware(http, [_runware_task("not yours")], headers={"Authorization": "Bearer key-b"})

        first = http.get("/v1/tasks", params={"limit": 2}, headers=a)
        assert first.status_code == 200 and first.headers["x-reelserve-auth"] == "keys"
        page1 = first.json()
        assert len(page1["data"]) == 2 and page1["nextCursor"]
        page2 = http.get("/v1/tasks", params={"limit": 2, "cursor": page1["nextCursor"]},
                         headers=a).json()
        assert len(page2["data"]) == 2 and page2["nextCursor"] is None
        listed = page1["data"] + page2["data"]
        # Newest first, every dialect, nothing of key-b.
        assert [t["origin"] for t in listed] == ["openai", "runware", "runware", "runware"]
        assert [t["prompt"] for t in listed[1:]] == ["boat 2", "boat 1", "boat 0"]
        assert listed[0]["id"] == video["id"]
        assert {t["taskUUID"] for t in listed[1:]} == {t["taskUUID"] for t in tasks}

        # Wait for all to finish, then show one with its result URLs.
        done = _poll(lambda: http.get(f"/v1/tasks/{tasks[0]['taskUUID']}", headers=a).json(),
                     lambda t: t["status"] == "succeeded")
        assert done["progress"] == 100 and done["model"] == "klingai:1@1"
        assert done["workflow"] == "t2v" and done["numberResults"] == 1
        assert done["error"] is None and done["createdAt"].endswith("Z")
        [result] = done["results"]
        media = http.get(result["url"])
        assert media.status_code == 200 and media.headers["content-type"] == "video/mp4"
        assert len(media.content) == result["sizeBytes"]
        # The OpenAI job is found by its own id too.
        by_id = http.get(f"/v1/tasks/{video['id']}", headers=a).json()
        assert by_id["origin"] == "openai" and by_id["id"] == video["id"]

        _poll(lambda: http.get("/v1/tasks", params={"status": "queued,running"},
                               headers=a).json(), lambda p: p["data"] == [])
        succeeded = http.get("/v1/tasks", params=[("status", "succeeded")], headers=a).json()
        assert len(succeeded["data"]) == 4
        assert http.get("/v1/tasks", params={"status": "failed"}, headers=a).json()["data"] == []

        # Errors: unknown status, another key's task, no key.
        bad = http.get("/v1/tasks", params={"status": "done"}, headers=a)
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "invalidStatus"
        cursor = http.get("/v1/tasks", params={"cursor": "not-a-cursor"}, headers=a)
        assert cursor.status_code == 400
        assert cursor.json()["errors"][0]["code"] == "invalidCursor"
        assert cursor.json()["errors"][0]["parameter"] == "cursor"
        other = http.get(f"/v1/tasks/{tasks[0]['taskUUID']}",
                         headers={"Authorization": "Bearer key-b"})
        assert other.status_code == 404 and other.json()["errors"][0]["code"] == "taskNotFound"
        assert http.get("/v1/tasks").status_code == 401
        assert http.post(f"/v1/tasks/{uuid.uuid4()}/cancel", headers=a).status_code == 404


def test_cancel_queued_never_runs_and_running_stops(server_factory: ServerFactory) -> None:
    srv: ServerProcess = server_factory(env={"REELSERVE_WORKERS": "1"})
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        long = http.post("/v1/videos", json=LONG_OPENAI).json()
        _poll(lambda: http.get(f"/v1/tasks/{long['id']}").json(),
              lambda t: t["status"] == "running")
        # Behind the long render on the only worker: queued.
        queued = _runware_task("never rendered")
        runware(http, [queued])
        assert http.get(f"/v1/tasks/{queued['taskUUID']}").json()["status"] == "queued"
        cancelled = http.post(f"/v1/tasks/{queued['taskUUID']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.headers["x-reelserve-auth"] == "keyless"

        started = time.monotonic()
        stopping = http.post(f"/v1/tasks/{long['id']}/cancel").json()
        assert stopping["status"] in ("cancelling", "cancelled")
        ended = _poll(lambda: http.get(f"/v1/tasks/{long['id']}").json(),
                      lambda t: t["status"] == "cancelled", timeout=30)
        assert ended["status"] == "cancelled" and ended["results"] == []
        assert ended["progress"] < 100 and "cancel" in ended["error"]["code"].lower()
        stop_seconds = time.monotonic() - started
        assert stop_seconds < 10, stop_seconds
        # Cancelling a finished task again is not an error; the queued one never ran.
        assert http.post(f"/v1/tasks/{long['id']}/cancel").json()["status"] == "cancelled"
        again = http.get(f"/v1/tasks/{queued['taskUUID']}").json()
        assert again["status"] == "cancelled" and again["results"] == []
        # The dialect that created it sees the cancellation too (Runware getResponse).
        errors = runware(http, [{"taskType": "getResponse",
                                 "taskUUID": queued["taskUUID"]}]).json()["errors"]
        assert errors[0]["taskUUID"] == queued["taskUUID"]
        assert "cancel" in errors[0]["code"].lower()
