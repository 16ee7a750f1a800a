"""reelserve.client (Client and AsyncClient) against a real server.

The module's server renders with the preview engine (two worker threads); outputs are small
(720x720, 5 s) and checked by probing the downloaded files.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelserve.client import AsyncClient, Client, VideoResult
from reelserve.errors import (
    AuthError,
    ConflictError,
    ErrorKind,
    MediaError,
    NotFoundError,
    OutboundBlockedError,
    ValidationError,
)
from reelserve.media.probe import probe
from reelserve_testing import ServerFactory, ServerProcess, make_png, make_video

T2V = {"model": "klingai:1@1", "positivePrompt": "A lighthouse at dusk, waves rolling in",
       "width": 720, "height": 720, "duration": 5}


@pytest.fixture
def rs(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def test_upload_image_and_media(rs: Client, tmp_path: Path) -> None:
    png = tmp_path / "first.png"
    png.write_bytes(make_png(640, 360))
    from_path = rs.upload_image(png)
    from_bytes = rs.upload_image(make_png(400, 400, seed=3))
    assert _is_uuid(from_path) and _is_uuid(from_bytes) and from_path != from_bytes

    video = make_video(tmp_path / "in.mp4")
    media = rs.upload_media(video)
    assert _is_uuid(media)
    rs.delete_media(media)
    with pytest.raises(NotFoundError) as gone:
        rs.delete_media(media)
    assert gone.value.code == "mediaNotFound" and gone.value.parameter == "mediaUUID"

    # The server sniffs the bytes: text is not an image.
    with pytest.raises(ValidationError) as not_image:
        rs.upload_image(b"certainly not an image")
    assert not_image.value.code == "invalidImage" and not_image.value.parameter == "image"
    # A path that cannot be read is refused before anything is sent.
    with pytest.raises(MediaError) as missing:
        rs.upload_image(tmp_path / "missing.png")
    assert missing.value.code == "invalidMediaPath"


def test_t2v_wait_progress_and_download(rs: Client, tmp_path: Path) -> None:
    progress: list[int] = []
    [result] = rs.video_inference(**T2V, seed=7, includeCost=True, poll_interval=0.2,
                                  on_progress=progress.append)
    assert result.done and _is_uuid(result.task_uuid) and result.video_uuid
    assert result.seed == 7 and result.cost == pytest.approx(0.1848)
    assert result.url is not None and result.url.startswith(rs.url + "/media/outputs/")
    assert progress and progress[-1] == 100 and all(0 <= p <= 100 for p in progress)

    path = rs.download(result, tmp_path / "t2v.mp4")
    assert path == tmp_path / "t2v.mp4" and not (tmp_path / "t2v.mp4.part").exists()
    info = probe(path)
    assert (info.video_codec, info.width, info.height) == ("h264", 720, 720)
    assert info.fps == pytest.approx(30) and info.num_frames == 150
    # Into a directory: named after the video.
    again = rs.download(result, tmp_path)
    assert again.name == f"{result.video_uuid}.mp4" and again.read_bytes() == path.read_bytes()

    # The task stays readable after its results were handed out.
    details = rs.task_details(result.task_uuid)
    assert details["status"] == "success" and details["request"]["seed"] == 7
    assert rs.get_response(result.task_uuid) == []


def test_i2v_two_results_inline_output(rs: Client, tmp_path: Path) -> None:
    first = rs.upload_image(make_png(1280, 720, seed=5))
    results = rs.video_inference(
        model="klingai:2@1", inputs={"frameImages": [{"image": first, "frame": "first"}]},
        width=720, height=720, duration=5, numberResults=2, seed=100,
        outputType="base64Data", poll_interval=0.2)
    assert len(results) == 2
    assert sorted(r.seed for r in results if r.seed is not None) == [100, 101]
    assert len({r.video_uuid for r in results}) == 2
    assert all(r.url is None and r.base64_data for r in results)
    for i, result in enumerate(results):
        info = probe(rs.download(result, tmp_path / f"i2v-{i}.mp4"))
        assert (info.width, info.height, info.num_frames) == (720, 720, 150)


def test_wait_false_then_wait_for(rs: Client) -> None:
    [pending] = rs.video_inference(**T2V, wait=False)
    assert pending == VideoResult(task_uuid=pending.task_uuid, status="processing", progress=0)
    assert not pending.done
    [result] = rs.wait_for(pending.task_uuid, poll_interval=0.2)
    assert result.done and result.task_uuid == pending.task_uuid
    # Another poller took the video already: wait_for reads it back from getTaskDetails.
    [again] = rs.wait_for(pending.task_uuid, poll_interval=0.2)
    assert again.video_uuid == result.video_uuid


def test_refusals_carry_code_parameter_and_allowed_values(rs: Client) -> None:
    with pytest.raises(ValidationError) as duration:
        rs.video_inference(**{**T2V, "duration": 7})
    assert duration.value.code == "invalidDuration" and duration.value.parameter == "duration"
    assert duration.value.allowed_values == [5, 10]
    assert duration.value.kind is ErrorKind.INVALID and "7" in duration.value.message

    with pytest.raises(NotFoundError) as model:
        rs.video_inference(**{**T2V, "model": "klingai:99@9"})
    assert model.value.code == "modelNotFound" and model.value.parameter == "model"

    # klingai:2@1 is image-to-video only.
    with pytest.raises(ValidationError) as workflow:
        rs.video_inference(**{**T2V, "model": "klingai:2@1"})
    assert workflow.value.code == "unsupportedWorkflow"

    with pytest.raises(NotFoundError) as unknown:
        rs.get_response(str(uuid.uuid4()))
    assert unknown.value.code == "taskNotFound" and unknown.value.parameter == "taskUUID"

    task_uuid = rs.submit(**T2V)
    with pytest.raises(ConflictError) as conflict:
        rs.submit(**T2V, taskUUID=task_uuid)
    assert conflict.value.code == "conflictTaskUUID"

    with pytest.raises(ValidationError) as sync:
        rs.video_inference(**T2V, deliveryMethod="sync")
    assert sync.value.code == "invalidDeliveryMethod"


def test_failed_generation_raises_the_task_error(rs: Client) -> None:
    # Accepted at submit; the worker's fetch of the frame hits the outbound guard (loopback).
    with pytest.raises(OutboundBlockedError) as blocked:
        rs.video_inference(model="klingai:2@1", width=720, height=720, duration=5,
                           inputs={"frameImages": ["http://127.0.0.1:9/first.png"]},
                           poll_interval=0.2, timeout=120)
    assert blocked.value.code == "blockedAddress"
    assert blocked.value.parameter is not None and "frameImages" in blocked.value.parameter


def test_api_key_from_argument_or_environment(server_factory: ServerFactory,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "key-a", "REELSERVE_WORKERS": "0"})
    with Client(srv.url) as anonymous, pytest.raises(AuthError) as refused:
        anonymous.ping()
    assert refused.value.code == "invalidApiKey" and refused.value.kind is ErrorKind.AUTH
    with Client(srv.url, api_key="key-a") as keyed:
        assert keyed.ping()
    monkeypatch.setenv("REELSERVE_API_KEY", "key-a")
    with Client(srv.url + "/v1") as from_env:
        assert from_env.ping()
        assert from_env.model_search("2.1")["totalResults"] == 3


def test_unreachable_server_is_a_reelserve_error() -> None:
    from reelserve.errors import ReelserveError
    from reelserve_testing import free_port

    with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as client, \
            pytest.raises(ReelserveError) as down:
        client.ping()
    assert down.value.code == "serverUnreachable" and down.value.kind is ErrorKind.UNAVAILABLE


async def test_async_client(server: ServerProcess, tmp_path: Path) -> None:
    async with AsyncClient(server.url) as client:
        assert await client.ping()
        models = await client.model_search(limit=100)
        assert models["totalResults"] == len(models["results"]) == 13
        first = await client.upload_image(make_png(720, 720, seed=9))
        [result] = await client.video_inference(
            model="klingai:1@1", inputs={"frameImages": [first]}, width=720, height=720,
            duration=5, includeCost=True, poll_interval=0.2)
        assert result.done and result.cost == pytest.approx(0.1848)
        info = probe(await client.download(result, tmp_path / "async.mp4"))
        assert (info.width, info.height, info.num_frames) == (720, 720, 150)
        details = await client.task_details(result.task_uuid)
        assert details["response"]["data"][0]["videoUUID"] == result.video_uuid
        with pytest.raises(ValidationError) as bad:
            await client.video_inference(**{**T2V, "width": 1000, "height": 1000})
        assert bad.value.code == "invalidDimensions" and bad.value.parameter in ("width", "height")


def test_task_api_list_get_cancel(rs: Client) -> None:
    task_uuid = rs.submit(**T2V)
    task = rs.get_task(task_uuid)
    assert task["taskUUID"] == task_uuid and task["origin"] == "runware"
    assert rs.auth_mode == "keyless"
    page = rs.list_tasks(limit=1)
    assert [t["taskUUID"] for t in page["data"]] == [task_uuid]
    cancelled = rs.cancel_task(task_uuid)
    assert cancelled["status"] in ("cancelled", "cancelling", "succeeded")
    with pytest.raises(NotFoundError) as missing:
        rs.get_task("no-such-task")
    assert missing.value.code == "taskNotFound" and missing.value.parameter == "taskUUID"
    with pytest.raises(ValidationError) as bad:
        rs.list_tasks(status="finished")
    assert bad.value.code == "invalidStatus"


async def test_async_task_api(server: ServerProcess) -> None:
    async with AsyncClient(server.url) as client:
        task_uuid = await client.submit(**T2V)
        listed = await client.list_tasks(status=["queued", "running", "succeeded"], limit=100)
        assert task_uuid in [t["taskUUID"] for t in listed["data"]]
        await client.wait_for(task_uuid, poll_interval=0.2)
        done = await client.get_task(task_uuid)
        assert done["status"] == "succeeded" and len(done["results"]) == 1
        again = await client.cancel_task(task_uuid)  # a finished task is left as it is
        assert again["status"] == "succeeded" and client.auth_mode == "keyless"
