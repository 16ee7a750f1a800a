"""Every dialect's answer to a per-key limit carries ``Retry-After``: the whole seconds until the
limit admits a submit again (the submits-per-minute window), or a polling hint for the limit on
tasks in flight, which frees only when a job ends (real server)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from reelserve.api.serving import RETRY_AFTER_IN_FLIGHT
from reelserve_testing import ServerFactory


def _submits(url: str) -> dict[str, httpx.Response]:
    """One submit in each dialect, all from the same (loopback) owner."""
    with httpx.Client(base_url=url, timeout=60) as http:
        return {
            "runware": http.post("/v1", json=[{
                "taskType": "videoInference", "taskUUID": str(uuid.uuid4()),
                "model": "klingai:1@1", "positivePrompt": "a lake", "width": 720,
                "height": 720, "duration": 5}]),
            "openai": http.post("/v1/videos", json={"prompt": "a lake", "size": "720x720"}),
            "kling": http.post("/v1/videos/text2video", json={"prompt": "a lake"}),
            "m2v": http.post("/klingai/m2v_txt2video_hq_5s",
                             files=[("prompt", (None, "a lake"))]),
        }


@pytest.mark.parametrize(("env", "expected"), [
    ({"REELSERVE_RATE_SUBMITS_PER_MINUTE": "1", "REELSERVE_RATE_MAX_IN_FLIGHT": "0"},
     range(50, 61)),  # the window frees a minute after the first submit
    ({"REELSERVE_RATE_SUBMITS_PER_MINUTE": "0", "REELSERVE_RATE_MAX_IN_FLIGHT": "1"},
     range(RETRY_AFTER_IN_FLIGHT, RETRY_AFTER_IN_FLIGHT + 1)),
], ids=["per-minute", "in-flight"])
def test_rate_limited_answers_say_when_to_retry(
    server_factory: ServerFactory, env: dict[str, str], expected: range
) -> None:
    srv = server_factory(env={"REELSERVE_WORKERS": "0", **env})
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        first = http.post("/v1/videos", json={"prompt": "a lake", "size": "720x720"})
        assert first.status_code == 200 and "retry-after" not in first.headers
    refused = _submits(srv.url)
    for dialect, resp in refused.items():
        # Runware answers a batch whose every task failed with 400 and the error items.
        assert resp.status_code == (400 if dialect == "runware" else 429), (dialect, resp.text)
        body = resp.json()
        code = (body["errors"][0]["code"] if dialect == "runware" else
                body["error"]["code"] if dialect == "openai" else body["code"])
        assert code in ("rateLimitExceeded", 1302, 1303), (dialect, body)
        assert int(resp.headers["retry-after"]) in expected, (dialect, resp.headers)
