"""The official ``openai`` Python SDK against a real server: ``videos.create`` with
``input_reference`` as a file (multipart upload) and as an image URL (through ``extra_body``: the
SDK flattens it into the form field ``input_reference[image_url]``, the field the Node SDK
sends); the URL is a PNG served on loopback (``REELSERVE_OUTBOUND_ALLOW=127.0.0.1``), fetched by
the worker. The Node SDK's form and the JSON object form are sent with httpx."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from reelserve.media.probe import probe
from reelserve_testing import ServerFactory, make_png

# The SDK marks its videos API deprecated (OpenAI's hosted service ends); the wire protocol it
# speaks is what this server implements, so the warning says nothing about this server.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The Sora API is scheduled to permanently shut down:DeprecationWarning")


@contextlib.contextmanager
def png_server(png: bytes) -> Iterator[tuple[str, list[str]]]:
    """Serves ``png`` at ``/ref.png`` on a free loopback port; yields its URL and the paths
    requested (so a test sees that the server really fetched it)."""
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/ref.png", requested
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_video(client: OpenAI, video_id: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.videos.retrieve(video_id)
        if video.status in ("completed", "failed"):
            return video
        time.sleep(0.2)
    raise AssertionError(f"video {video_id} did not finish within {timeout} s")


@pytest.fixture
def sdk(server_factory: ServerFactory) -> Iterator[OpenAI]:
    server = server_factory(env={"REELSERVE_WORKERS": "2",
                                 "REELSERVE_OUTBOUND_ALLOW": "127.0.0.1"})
    # A keyless server serves loopback clients; the SDK insists on some key.
    with OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0) as client:
        yield client


def test_create_with_input_reference_file(sdk: OpenAI, tmp_path: Path) -> None:
    video = sdk.videos.create(model="klingai:1@1", prompt="the box slides", seconds="5",
                              size="1280x720",  # type: ignore[arg-type]
                              input_reference=("ref.png", make_png(640, 360), "image/png"))
    assert video.object == "video" and video.status in ("queued", "in_progress")
    done = wait_video(sdk, video.id)
    assert done.status == "completed", done.error
    (tmp_path / "v.mp4").write_bytes(sdk.videos.download_content(video.id).read())
    facts = probe(tmp_path / "v.mp4")
    assert (facts.width, facts.height) == (1280, 720)


def test_create_with_input_reference_image_url(sdk: OpenAI) -> None:
    with png_server(make_png(640, 360, seed=3)) as (url, requested):
        # The SDK's create() takes only files for input_reference (a dict fails inside the SDK),
        # so an image URL goes through extra_body; the SDK sends its multipart body with the
        # nested object flattened into the form field input_reference[image_url].
        video = sdk.videos.create(model="klingai:1@1", prompt="the box slides", seconds="5",
                                  size="1280x720",  # type: ignore[arg-type]
                                  extra_body={"input_reference": {"image_url": url}})
        done = wait_video(sdk, video.id)
        assert done.status == "completed", done.error
        assert requested == ["/ref.png"]  # the worker fetched the reference image


def test_node_style_form_field_and_json_object(sdk: OpenAI) -> None:
    # What the Node SDK sends (a multipart field named input_reference[image_url]) and the JSON
    # object form, through plain httpx: both reach the worker as the first frame.
    base = str(sdk.base_url).rstrip("/")
    with png_server(make_png(640, 360, seed=4)) as (url, requested):
        form = httpx.post(f"{base}/videos", timeout=30, files=[
            ("prompt", (None, "a b")), ("size", (None, "1280x720")),
            ("input_reference[image_url]", (None, url))])
        assert form.status_code == 200, form.text
        assert form.request.headers["content-type"].startswith("multipart/form-data")
        as_json = httpx.post(f"{base}/videos", json={"prompt": "a b", "size": "1280x720",
                                                     "input_reference": {"image_url": url}},
                             timeout=30)
        assert as_json.status_code == 200, as_json.text
        for answer in (form, as_json):
            assert wait_video(sdk, answer.json()["id"]).status == "completed"
        assert requested == ["/ref.png", "/ref.png"]
    # a reference form the server does not take is named, not silently dropped
    other = httpx.post(f"{base}/videos", timeout=30, files=[
        ("prompt", (None, "a b")), ("input_reference[file_id]", (None, "file_1"))])
    assert other.status_code == 400, other.text
    assert other.json()["error"]["param"] == "input_reference[file_id]"
