"""Helpers for tests that talk to a REAL reelserve server (importable as ``reelserve_testing``).

:class:`ServerProcess` runs ``python -m reelserve serve --port <free> --data-dir <dir>`` with extra
``REELSERVE_*`` variables (``tests/worker`` is on its ``PYTHONPATH``, so
``REELSERVE_ENGINE_SELECTOR=tiny_engine:engine_selector`` selects the tiny test engine). Media
helpers make test images/videos; ``runware``, ``upload_image``, ``upload_media`` and
``poll_results`` speak the Runware REST protocol through httpx. :class:`WorkerProcess` runs a
separate ``python -m reelserve worker`` against a data dir (as another machine would).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TESTS_DIR = Path(__file__).resolve().parent

SERVER_START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ReelserveProcess:
    """A ``python -m reelserve ...`` subprocess with its own log file under ``data_dir``.

    Only the given ``env`` is passed among ``REELSERVE_*`` variables; ``tests/worker`` is on the
    ``PYTHONPATH`` so the tiny test engines can be selected.
    """

    def __init__(self, data_dir: Path, env: dict[str, str] | None, log_name: str) -> None:
        self.data_dir = data_dir
        self.env = dict(env or {})
        self.log_path = data_dir / log_name
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELSERVE_")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(TESTS_DIR / "worker"), env.get("PYTHONPATH")) if p)
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "reelserve", *args],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        """The end of the process's log (for assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no shutdown code runs (a worker's lease is left to expire)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout`` seconds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None


class ServerProcess(_ReelserveProcess):
    """``python -m reelserve serve`` in a subprocess, with its log in ``data_dir/server.log``."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        super().__init__(data_dir, env, "server.log")
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = SERVER_START_TIMEOUT) -> ServerProcess:
        """Start the server and wait until /health answers."""
        self._spawn(["--log-level", "warning", "serve", "--port", str(self.port),
                     "--data-dir", str(self.data_dir)])
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {timeout} s:\n{self.log()}")


ServerFactory = Callable[..., "ServerProcess"]
"""``server_factory(env=None, data_dir=None, port=None) -> ServerProcess``."""


# ---------------------------------------------------------------------------------- helpers


def make_png(width: int = 640, height: int = 360, seed: int = 0) -> bytes:
    """A PNG test image with a gradient and a colored box (varies with ``seed``)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height))
    pixels = image.load()
    assert pixels is not None
    for x in range(0, width, 4):
        shade = (x * 255 // max(1, width - 1) + seed * 37) % 256
        for dx in range(min(4, width - x)):
            for y in range(0, height, max(1, height // 8)):
                pixels[x + dx, y] = (shade, 80, 255 - shade)
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 4, height // 4, width // 2, height // 2), fill=(200, 40 + seed, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def make_jpeg(width: int = 640, height: int = 360, seed: int = 0) -> bytes:
    """A JPEG test image."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(make_png(width, height, seed))).save(out, format="JPEG", quality=85)
    return out.getvalue()


def make_video(path: Path, width: int = 640, height: int = 360, frames: int = 24,
               fps: int = 24) -> Path:
    """A short H.264 MP4 test video made with PyAV."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            arr = np.zeros((height, width, 3), dtype=np.uint8)
            arr[:, :, 0] = (i * 10) % 256
            arr[height // 4: height // 2, (i * 8) % width:, 1] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def runware(http: httpx.Client, tasks: list[dict[str, Any]], **kwargs: Any) -> httpx.Response:
    """POST a task array to /v1."""
    return http.post("/v1", json=tasks, **kwargs)


def upload_image(http: httpx.Client, width: int = 640, height: int = 360, seed: int = 0) -> str:
    """Upload a generated PNG with imageUpload; returns its imageUUID."""
    task_uuid = str(uuid.uuid4())
    resp = runware(http, [{"taskType": "imageUpload", "taskUUID": task_uuid,
                           "image": data_uri(make_png(width, height, seed))}])
    assert resp.status_code == 200, resp.text
    item = resp.json()["data"][0]
    assert item["taskUUID"] == task_uuid
    return str(item["imageUUID"])


def upload_media(http: httpx.Client, data: bytes) -> str:
    """Upload bytes with mediaStorage; returns the mediaUUID."""
    resp = runware(http, [{"taskType": "mediaStorage", "taskUUID": str(uuid.uuid4()),
                           "operation": "upload", "media": base64.b64encode(data).decode()}])
    assert resp.status_code == 200, resp.text
    return str(resp.json()["data"][0]["mediaUUID"])


def poll_results(http: httpx.Client, task_uuid: str, number_results: int = 1,
                 timeout: float = 300.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """getResponse until ``number_results`` success items or an error arrived."""
    items: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = runware(http, [{"taskType": "getResponse", "taskUUID": task_uuid}])
        assert resp.status_code in (200, 400), resp.text
        body = resp.json()
        errors.extend(body.get("errors", []))
        items.extend(i for i in body["data"] if i.get("status") == "success")
        if errors or len(items) >= number_results:
            return items, errors
        time.sleep(0.2)
    raise AssertionError(f"task {task_uuid} did not finish within {timeout} s")


class WorkerProcess(_ReelserveProcess):
    """``python -m reelserve worker --data-dir DIR`` with its log in ``DIR/<name>.log``."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str = "worker") -> None:
        super().__init__(data_dir, env, f"{name}.log")

    def start(self) -> WorkerProcess:
        """Spawn the worker process."""
        self._spawn(["--log-level", "info", "worker", "--data-dir", str(self.data_dir)])
        return self
