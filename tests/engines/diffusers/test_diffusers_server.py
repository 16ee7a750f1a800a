"""Real requests through a real server whose profiles name tiny diffusers folders.

The preview engine is switched off, so every result below was rendered by the diffusers engine;
each downloaded file is probed for the contract size, fps and frame count.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from diffusers_tiny import profile_toml

from reelserve.media.probe import probe
from reelserve_testing import make_video, poll_results, runware, upload_image, upload_media

O1 = "klingai:kling@o1-standard"

# (model, workflow, pipeline kind): one request per workflow, spread over the pipeline kinds
ROUTES = [
    ("klingai:1@1", "t2v", "wan-t2v"),
    ("klingai:2@1", "i2v", "wan22-ti2v"),
    ("klingai:5@2", "flf2v", "wan22-i2v"),
    (O1, "r2v", "wan-vace"),
    (O1, "v2v", "ltx-condition"),
]


@pytest.mark.slow
def test_each_workflow_renders_through_the_server(
    server_factory: Any, tiny_weights: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(profile_toml([(m, w, k, tiny_weights[k], {}) for m, w, k in ROUTES]))
    server = server_factory(env={
        "REELSERVE_PROFILES": str(path),
        "REELSERVE_PREVIEW_FALLBACK": "false",
        "REELSERVE_DIFFUSERS_DEVICE": "cpu",
        "REELSERVE_WORKERS": "1",
    })
    with httpx.Client(base_url=server.url, timeout=120.0) as http:
        first, last, ref = (upload_image(http, 640, 360, seed) for seed in (1, 2, 3))
        video = upload_media(http, make_video(tmp_path / "in.mp4", 320, 320, frames=36, fps=12).read_bytes())
        base = {"taskType": "videoInference", "positivePrompt": "a cat dances on the moon",
                "deliveryMethod": "async"}
        tasks: dict[str, tuple[dict[str, Any], tuple[int, int, float, int]]] = {
            "t2v": ({"model": "klingai:1@1", "width": 720, "height": 720, "duration": 5}, (720, 720, 30, 150)),
            "i2v": ({"model": "klingai:2@1", "width": 1280, "height": 720, "duration": 5,
                     "inputs": {"frameImages": [{"image": first, "frame": "first"}]}}, (1280, 720, 30, 150)),
            "flf2v": ({"model": "klingai:5@2", "width": 1080, "height": 1080, "duration": 5,
                       "inputs": {"frameImages": [{"image": first, "frame": "first"},
                                                  {"image": last, "frame": "last"}]}}, (1080, 1080, 24, 120)),
            "r2v": ({"model": O1, "duration": 3, "inputs": {"referenceImages": [ref]}}, (1280, 720, 24, 72)),
            "v2v": ({"model": O1, "inputs": {"video": video}}, (320, 320, 24, 72)),
        }
        submitted = {}
        for workflow, (task, expected) in tasks.items():
            task_uuid = str(uuid.uuid4())
            resp = runware(http, [{**base, **task, "taskUUID": task_uuid}])
            assert resp.status_code == 200, resp.text
            submitted[workflow] = (task_uuid, expected)
        for workflow, (task_uuid, (width, height, fps, frames)) in submitted.items():
            items, errors = poll_results(http, task_uuid, timeout=600)
            assert not errors, (workflow, errors)
            out = tmp_path / f"{workflow}.mp4"
            out.write_bytes(http.get(items[0]["videoURL"]).content)
            info = probe(out)
            assert (info.width, info.height, info.num_frames) == (width, height, frames), workflow
            assert info.fps == pytest.approx(fps), workflow
