"""Uploads count against a per-key rate and byte quota (issue 14, item 7): one key cannot fill
the server's disk with input files, and other keys are not affected."""

from __future__ import annotations

import base64
import uuid

import httpx

from reelserve_testing import ServerFactory, make_png, runware


def _upload(http: httpx.Client, key: str, seed: int = 0) -> httpx.Response:
    image = "data:image/png;base64," + base64.b64encode(make_png(seed=seed)).decode()
    return runware(http, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                           "image": image}], headers={"Authorization": f"Bearer {key}"})


def test_uploads_per_minute_are_limited_per_key(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "k1,k2", "REELSERVE_WORKERS": "0",
                              "REELSERVE_RATE_UPLOADS_PER_MINUTE": "3"})
    with httpx.Client(base_url=srv.url, timeout=30.0) as http:
        assert all(_upload(http, "k1", seed).status_code == 200 for seed in range(3))
        refused = _upload(http, "k1")
        assert refused.status_code == 400, refused.text  # Runware: every task failed
        error = refused.json()["errors"][0]
        assert error["code"] == "rateLimitExceeded" and "uploads" in error["message"], error
        assert _upload(http, "k2").status_code == 200  # another key has its own window


def test_upload_bytes_per_hour_are_a_quota_per_key(server_factory: ServerFactory) -> None:
    size = len(make_png())
    srv = server_factory(env={"REELSERVE_API_KEYS": "k1,k2", "REELSERVE_WORKERS": "0",
                              "REELSERVE_RATE_UPLOAD_BYTES_PER_HOUR": str(size * 2 + size // 2)})
    with httpx.Client(base_url=srv.url, timeout=30.0) as http:
        assert _upload(http, "k1").status_code == 200
        assert _upload(http, "k1").status_code == 200
        refused = _upload(http, "k1")
        error = refused.json()["errors"][0]
        assert error["code"] == "rateLimitExceeded" and "bytes per hour" in error["message"], error
        assert _upload(http, "k2").status_code == 200
