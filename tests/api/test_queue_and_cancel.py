"""Queue position and cancellation across dialects (real server, nothing rendering).

A job of each dialect waits in the queue of a server with no worker: ``GET /v1/tasks/{id}``
says where each stands (``queuePosition``), ``reelserve generate`` prints it while it waits,
and after ``POST /v1/tasks/{id}/cancel`` every dialect reports the job cancelled in its own
words: Runware ``getResponse`` an error with :data:`CANCELLED_CODE`, OpenAI ``failed`` with that
code, Kling ``task_status: failed`` with a message, 302 status 50 with the code.
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from reelserve.client.cli import PlainProgress
from reelserve.errors import CANCELLED_CODE
from reelserve_testing import ServerFactory, runware


def test_queue_position_and_cancel_in_every_dialect(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    srv = server_factory(env={"REELSERVE_WORKERS": "0"})  # nothing renders: jobs stay queued
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        task_uuid = str(uuid.uuid4())
        ack = runware(http, [{"taskType": "videoInference", "taskUUID": task_uuid,
                              "model": "klingai:1@1", "positivePrompt": "a lake",
                              "width": 720, "height": 720, "duration": 5}])
        assert ack.status_code == 200, ack.text
        openai = http.post("/v1/videos", json={"prompt": "a lake", "size": "720x720"})
        assert openai.status_code == 200, openai.text
        kling = http.post("/v1/videos/text2video", json={"prompt": "a lake"})
        assert kling.status_code == 200 and kling.json()["code"] == 0, kling.text
        m2v = http.post("/klingai/m2v_txt2video_hq_5s", files=[("prompt", (None, "a lake"))])
        assert m2v.status_code == 200, m2v.text
        ids = [task_uuid, openai.json()["id"], kling.json()["data"]["task_id"],
               m2v.json()["data"]["task"]["id"]]

        def position(task: str) -> int | None:
            body = http.get(f"/v1/tasks/{task}").json()
            assert body["status"] == "queued" or "queuePosition" not in body, body
            return body.get("queuePosition")

        assert [position(t) for t in ids] == [0, 1, 2, 3]
        listed = http.get("/v1/tasks").json()["data"]
        assert all("queuePosition" not in t for t in listed)  # lists stay one query

        # The CLI's piped progress says how many jobs are ahead while it waits.
        waited = subprocess.run(
            [sys.executable, "-m", "reelserve", "generate", "--url", srv.url, "--model",
             "klingai:1@1", "--prompt", "a lake", "--timeout", "1.5"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert waited.returncode == 1, waited.stderr
        assert "queued: 4 jobs ahead" in waited.stderr, waited.stderr

        for task in ids:
            cancelled = http.post(f"/v1/tasks/{task}/cancel")
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            assert "queuePosition" not in http.get(f"/v1/tasks/{task}").json()

        errors = runware(http, [{"taskType": "getResponse", "taskUUID": task_uuid}]).json()
        assert [(e["code"], e["taskUUID"]) for e in errors["errors"]] == [
            (CANCELLED_CODE, task_uuid)]
        video = http.get(f"/v1/videos/{ids[1]}").json()
        assert video["status"] == "failed" and video["error"]["code"] == CANCELLED_CODE
        task = http.get(f"/v1/videos/text2video/{ids[2]}").json()["data"]
        assert task["task_status"] == "failed" and "cancel" in task["task_status_msg"]
        fetched = http.get(f"/klingai/task/{ids[3]}/fetch").json()["data"]["task"]
        assert (fetched["status"], fetched["code"]) == (50, CANCELLED_CODE)


def test_plain_progress_prints_each_queue_move() -> None:
    err = io.StringIO()
    view = PlainProgress("t-1", err)
    for position in (2, 2, 1, 0):
        view.update("queued", 0, position)
    view.update("running", 10)
    lines = err.getvalue().splitlines()
    assert [line.split(": ", 1)[1].split(",")[0] for line in lines] == [
        "queued: 2 jobs ahead", "queued: 1 job ahead", "queued: next in line", "rendering  10%"]
