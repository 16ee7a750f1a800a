"""End to end with the S3 artifact store: real ``reelserve serve`` and ``reelserve worker``
processes, a real S3 endpoint on loopback (moto's standalone server) and, for several machines,
the session's private PostgreSQL server.

The second test is the point of the S3 store: the API server and the worker have DIFFERENT data
dirs and share only the database and the bucket, as on two machines without a shared filesystem.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from reelserve.api.media import UrlSigner
from reelserve.media.probe import probe
from reelserve_testing import (
    ServerFactory,
    WorkerProcess,
    data_uri,
    make_png,
    poll_results,
    runware,
)
from s3_server import S3Bucket

pytestmark = pytest.mark.slow

URL_SECRET = "e2e-s3-url-secret"


def _t2v() -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a lighthouse at dusk", "width": 720, "height": 720,
            "duration": 5, "deliveryMethod": "async"}


def _fetch_and_probe(http: httpx.Client, url: str, dest: Path) -> None:
    video = http.get(url)
    assert video.status_code == 200, video.text
    assert video.headers["content-type"] == "video/mp4"
    dest.write_bytes(video.content)
    facts = probe(dest)
    assert (facts.width, facts.height, facts.num_frames) == (720, 720, 150)


def _cached(data_dir: Path, key: str) -> list[Path]:
    kind, name = key.split("/")
    return list((data_dir / "artifact-cache" / kind).glob(f"{name}@*"))


def test_serve_renders_into_the_bucket_and_serves_from_it(
    server_factory: ServerFactory, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    data_dir = tmp_path / "server"
    srv = server_factory(env={**s3_bucket.env(), "REELSERVE_WORKERS": "1",
                              "REELSERVE_URL_SECRET": URL_SECRET,
                              "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"},
                         data_dir=data_dir)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        task = _t2v()
        assert runware(http, [task]).status_code == 200
        items, errors = poll_results(http, task["taskUUID"], timeout=120)
        assert errors == [], f"{errors}\n{srv.log()}"
        [item] = items
        key = f"outputs/{item['videoUUID']}"

        # The output is an object in the bucket, with its facts as metadata.
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=s3_bucket.object_key(key))
        assert head["ContentType"] == "video/mp4" and head["Metadata"]["owner"] == "local"
        assert head["Metadata"]["extension"] == "mp4"
        assert not (data_dir / "artifacts").exists(), "outputs went to the local disk"

        url = item["videoURL"]
        _fetch_and_probe(http, url, tmp_path / "a.mp4")
        # The server's copy is only a cache: without it the URL still works (fetched again).
        for path in _cached(data_dir, key):
            path.unlink()
        _fetch_and_probe(http, url, tmp_path / "b.mp4")
        assert _cached(data_dir, key), "the served file was not cached"
        ranged = http.get(url, headers={"Range": "bytes=0-99"})
        assert ranged.status_code == 206 and len(ranged.content) == 100

        # Signed URL semantics are unchanged: tampered 404, expired 410.
        query = parse_qs(urlsplit(url).query)
        tampered = url.replace(f"sig={query['sig'][0]}", "sig=" + "A" * len(query["sig"][0]))
        assert http.get(tampered).status_code == 404
        expired = UrlSigner(URL_SECRET.encode(), srv.url).url(key, "mp4", time.time() - 1)
        assert http.get(expired).status_code == 410


def test_a_worker_with_its_own_data_dir_completes_jobs_through_the_bucket(
    server_factory: ServerFactory, s3_bucket: S3Bucket, pg_database: str, tmp_path: Path
) -> None:
    env = {**s3_bucket.env(), "REELSERVE_DATABASE_URL": pg_database,
           "REELSERVE_URL_SECRET": URL_SECRET,
           "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"}
    api_dir, worker_dir = tmp_path / "api-machine", tmp_path / "gpu-machine"
    srv = server_factory(env={**env, "REELSERVE_WORKERS": "0"}, data_dir=api_dir)
    worker = WorkerProcess(worker_dir, {**env, "REELSERVE_WORKERS": "1"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            # An upload reaches the server; the worker needs it as the first frame.
            up = runware(http, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                 "image": data_uri(make_png(720, 720))}])
            assert up.status_code == 200, up.text
            image_uuid = up.json()["data"][0]["imageUUID"]
            task = {**_t2v(), "inputs": {"frameImages": [{"image": image_uuid,
                                                          "frame": "first"}]}}
            del task["positivePrompt"]
            ack = runware(http, [task])
            assert ack.status_code == 200, ack.text
            items, errors = poll_results(http, task["taskUUID"], timeout=120)
            assert errors == [], f"{errors}\n{worker.log()}\n{srv.log()}"
            [item] = items
            key = f"outputs/{item['videoUUID']}"
            _fetch_and_probe(http, item["videoURL"], tmp_path / "out.mp4")
    finally:
        worker.stop()

    # The worker rendered it (the server has no worker threads), fetched the upload from the
    # bucket and stored the output there; each machine holds only its own cache.
    assert s3_bucket.object_key(key) in s3_bucket.object_names()
    assert s3_bucket.object_key(f"uploads/{image_uuid}") in s3_bucket.object_names()
    assert _cached(worker_dir, f"uploads/{image_uuid}"), "the worker did not fetch the upload"
    assert _cached(worker_dir, key) and _cached(api_dir, key)
    for data_dir in (api_dir, worker_dir):
        assert not (data_dir / "artifacts").exists()
        assert not (data_dir / "reelserve.db").exists(), "a process fell back to SQLite"
    assert not (api_dir / "url_secret").exists() and not (api_dir / "work").exists()


def test_serve_refuses_to_start_without_its_bucket(
    server_factory: ServerFactory, s3_bucket: S3Bucket
) -> None:
    env = {**s3_bucket.env(), "REELSERVE_ARTIFACTS_URL": "s3://no-such-bucket-here/media"}
    with pytest.raises(RuntimeError, match="server exited with 2") as err:
        server_factory(env=env)
    message = str(err.value)
    assert "artifactStoreUnavailable" in message and "does not exist" in message
    assert "Traceback" not in message and "reelserve-test-secret" not in message
