"""Every Runware request example of the seeds completes on a real server with the preview engine.

Image/video URLs in the examples are replaced by media uploaded through imageUpload/mediaStorage.
All 35 examples run via async + getResponse and again via sync (includeCost), and their files are
probed. Expected size/fps/frames come from the one validator, costs from the seeds.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve.api.runware.schema import parse_video_inference
from reelserve.catalog.pricing import price
from reelserve.catalog.validate import resolve_media, validate
from reelserve.media.probe import probe
from reelserve_testing import (
    ServerProcess,
    make_video,
    poll_results,
    runware,
    upload_image,
    upload_media,
)

SEEDS = sorted((Path(__file__).resolve().parent.parent / "data" / "seeds").glob("*.json"))
EXAMPLES = {p.stem: json.loads(p.read_text("utf-8")) for p in SEEDS}
IMAGE_SIZE = (640, 360)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CODECS = {"MP4": "h264", "MOV": "h264", "WEBM": "vp9"}


@pytest.fixture(scope="module")
def media(server: ServerProcess) -> dict[str, str]:
    """UUIDs of uploaded test media (one image, one short video, and the v2v input video)."""
    with httpx.Client(base_url=server.url, timeout=120) as http:
        short = make_video(server.data_dir / "short.mp4", 640, 360, frames=24, fps=24)
        edit = make_video(server.data_dir / "edit.mp4", 1280, 720, frames=144, fps=24)  # 6.0 s
        return {"image": upload_image(http, *IMAGE_SIZE),
                "video": upload_media(http, short.read_bytes()),
                "edit": upload_media(http, edit.read_bytes())}


def prepare(example: dict[str, Any], media: dict[str, str]) -> dict[str, Any]:
    """The example's request with its media (URLs or foreign UUIDs) replaced by uploaded UUIDs."""
    edit = "inputVideo" in example

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if k == "taskUUID" else swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, str) and (value.startswith("https://") or UUID_RE.match(value)):
            if value.endswith((".mp4", ".mov", ".webm")):
                return media["edit"] if edit else media["video"]
            return media["image"]
        return value

    task = swap(copy.deepcopy(example["request"]))
    # Several seed examples share a taskUUID; on one server that is a conflictTaskUUID (tested
    # elsewhere), so every run gets a fresh one.
    task["taskUUID"] = str(uuid.uuid4())
    return dict(task)


def expected(example: dict[str, Any]) -> tuple[int, int, int, int, float]:
    """(width, height, fps, frames, cost) the contract promises for an example."""
    spec = validate(parse_video_inference(example["request"]))
    if "inputVideo" in example:
        v = example["inputVideo"]
        spec = resolve_media(spec, input_video=(v["width"], v["height"], v["duration"]))
    elif not spec.is_resolved:
        spec = resolve_media(spec, first_frame_size=IMAGE_SIZE)
    assert spec.width and spec.height
    cost = example["cost"] if example["cost"] is not None else price(spec)
    return spec.width, spec.height, spec.fps, spec.num_frames, cost


def check_item(http: httpx.Client, item: dict[str, Any], task: dict[str, Any],
               example: dict[str, Any], tmp: Path) -> None:
    width, height, fps, frames, cost = expected(example)
    assert item["taskUUID"] == task["taskUUID"]
    assert item["taskType"] == "videoInference"
    assert item["cost"] == pytest.approx(cost)
    assert isinstance(item["seed"], int) and item["videoUUID"]
    resp = http.get(item["videoURL"])
    assert resp.status_code == 200
    out = tmp / f"{item['videoUUID']}.mp4"
    out.write_bytes(resp.content)
    facts = probe(out)
    fmt = example["request"].get("outputFormat", "MP4")
    assert (facts.width, facts.height) == (width, height)
    assert facts.fps == pytest.approx(fps)
    assert facts.num_frames == frames
    assert facts.video_codec == CODECS[fmt]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_seed_example_async(name: str, server: ServerProcess, media: dict[str, str],
                            tmp_path: Path) -> None:
    example = EXAMPLES[name]
    task = {**prepare(example, media), "includeCost": True, "deliveryMethod": "async"}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        ack = runware(http, [task])
        assert ack.json() == {"data": [{"taskType": "videoInference",
                                        "taskUUID": task["taskUUID"]}]}
        items, errors = poll_results(http, task["taskUUID"])
        assert not errors, errors
        assert len(items) == 1 and items[0]["status"] == "success"
        check_item(http, items[0], task, example, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_seed_example_sync(name: str, server: ServerProcess, media: dict[str, str],
                           tmp_path: Path) -> None:
    example = EXAMPLES[name]
    task = {**prepare(example, media), "includeCost": True, "deliveryMethod": "sync"}
    with httpx.Client(base_url=server.url, timeout=300) as http:
        resp = runware(http, [task])
        assert resp.status_code == 200, resp.text
        items = resp.json()["data"]
        assert len(items) == 1 and "errors" not in resp.json()
        check_item(http, items[0], task, example, tmp_path)
