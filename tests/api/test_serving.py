"""The serving layer and the declared dialects, on real stores (SQLite, local files).

One expiry rule for every dialect's output URLs (OpenAI's ``expires_at`` included), webhook and
status bodies rendered through the dialect objects, a cancelled job reported with the one code,
and ``create_app`` mounting exactly the dialects it is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from reelserve.api.app import create_app, default_dialects
from reelserve.api.kling.router import KLING, KlingService
from reelserve.api.m2v.router import M2VService
from reelserve.api.openai.router import OPENAI, OpenAIService
from reelserve.api.openai.schema import job_error
from reelserve.api.runware import render
from reelserve.api.runware.dialect import RUNWARE
from reelserve.api.services import Services
from reelserve.api.serving import Serving
from reelserve.catalog.validate import validate
from reelserve.delivery.dispatcher import StatusEvent
from reelserve.delivery.storage import OUTPUTS
from reelserve.errors import CANCELLED_CODE
from reelserve.settings import Settings
from reelserve.tasks import Job, JobStatus, Result, TaskRequest

TTL = 900


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[Serving]:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    services = Services.from_settings(settings)
    yield Serving(services)
    services.store.close()


def finished(serving: Serving, origin: str, **job: Any) -> tuple[Job, Result, float]:
    """A succeeded job of ``origin`` whose one output was stored (not rendered) long before
    the job's last update: the expiry must count from the output, not from the update."""
    spec = validate(TaskRequest(task_uuid=str(uuid.uuid4()), model="klingai:1@1",
                                positive_prompt="a calm lake at dawn", ttl=TTL))
    video_uuid = str(uuid.uuid4())
    info = serving.services.artifacts.put_bytes(f"{OUTPUTS}/{video_uuid}", b"\x00" * 64,
                                                content_type="video/mp4", owner="o",
                                                extension="mp4")
    result = Result(index=0, video_uuid=video_uuid, seed=1, artifact_key=info.key,
                    content_type="video/mp4", size_bytes=64, width=720, height=720, fps=30,
                    num_frames=150, duration=5.0)
    done = Job(id=str(uuid.uuid4()), task_uuid=spec.task_uuid, owner="o", origin=origin,
               spec=spec, status=JobStatus.SUCCEEDED, progress=100, results=[result],
               created_at=info.created_at - 60, updated_at=info.created_at + 500, **job)
    return done, result, info.created_at + TTL


def url_expiry(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["exp"][0])


def test_one_expiry_rule_for_every_dialect(serving: Serving) -> None:
    job, result, expires = finished(serving, "openai")
    assert OpenAIService(serving).render(job)["expires_at"] == int(expires)
    assert url_expiry(render.result_item(job, result, serving)["videoURL"]) == int(expires)
    kling = KlingService(serving).render(job.model_copy(update={"origin": "kling.text2video"}))
    assert url_expiry(kling["task_result"]["videos"][0]["url"]) == int(expires)
    assert url_expiry(M2VService(serving).video_url(job, result)) == int(expires)
    assert serving.expires_at(job) == expires


def test_webhook_and_status_bodies_come_from_the_dialect_objects(serving: Serving) -> None:
    assert RUNWARE.webhook is not None and KLING.status is not None
    job, result, expires = finished(serving, "runware")
    [item] = RUNWARE.webhook(serving)(job, result)["data"]  # type: ignore[index]
    assert item["taskUUID"] == job.task_uuid and item["videoUUID"] == result.video_uuid
    assert url_expiry(item["videoURL"]) == int(expires)
    kling_job = job.model_copy(update={"origin": "kling.image2video"})
    body = KLING.status(serving)(kling_job, StatusEvent(JobStatus.SUCCEEDED, job.updated_at))
    assert body is not None and body["task_status"] == "succeed"
    assert url_expiry(body["task_result"]["videos"][0]["url"]) == int(expires)
    running = KLING.status(serving)(kling_job, StatusEvent(JobStatus.RUNNING, job.created_at))
    assert running is not None and running["task_status"] == "processing"
    assert "task_result" not in running
    # Dialects that only answer polls declare no renderers.
    assert OPENAI.webhook is None and OPENAI.status is None


def test_a_cancelled_job_reads_the_one_code_everywhere(serving: Serving) -> None:
    job, _result, _ = finished(serving, "runware")
    cancelled = job.model_copy(update={"status": JobStatus.CANCELLED, "results": [],
                                       "error": None})
    [error] = render.job_errors(cancelled)
    assert error["code"] == CANCELLED_CODE
    [item] = render.webhook_payload(cancelled, None, serving)["data"]
    assert (item["code"], item["status"]) == (CANCELLED_CODE, "error")
    openai_error = job_error(cancelled)
    assert openai_error is not None and openai_error["code"] == CANCELLED_CODE
    from reelserve.api.m2v.schema import Links, render_task

    task = render_task(cancelled, Links(video=lambda r: "", cover=lambda r: None))["task"]
    assert task["code"] == CANCELLED_CODE
    kling = KlingService(serving).render(cancelled.model_copy(update={"origin": "kling.text2video"}))
    assert kling["task_status"] == "failed" and "cancelled" in kling["task_status_msg"]


def test_create_app_mounts_the_dialects_it_is_given(serving: Serving) -> None:
    from fastapi.testclient import TestClient

    def mounted(dialects: Any) -> dict[str, bool]:
        # No lifespan (no workers, no dispatcher thread): routing only; a route that is not
        # mounted answers 404 (these never do when mounted: a list, a ping, an auth refusal).
        app = create_app(serving.settings, serving.services, run_workers=False,
                         dialects=dialects)
        http = TestClient(app)
        answers = {"kling": http.get("/v1/videos/text2video"),
                   "openai": http.get("/v1/videos"),
                   "302": http.post("/klingai/m2v_txt2video_hq_5s", data={"prompt": "x"}),
                   "runware": http.post("/v1", json=[{"taskType": "ping"}])}
        return {name: resp.status_code != 404 for name, resp in answers.items()}

    assert mounted([KLING]) == {"kling": True, "openai": False, "302": False, "runware": False}
    assert mounted(None) == {"kling": True, "openai": True, "302": True, "runware": True}
    assert [d.origin for d in default_dialects()] == ["runware", "m2v", "kling", "openai"]
