"""A full disk under a real server (issue 14, item 9).

Uploads and submits on a full disk are refused with ``insufficientStorage`` (HTTP 507) in every
dialect, not a bare 500, and leave no partial file in ``artifacts/.tmp``. A worker whose output
cannot be stored hands its job back and backs off (one log line for the condition, no traceback
per try, no attempt used) and finishes the job once there is space again.

The full disk is a small tmpfs mounted where the server keeps its files; mounting needs root
(or CAP_SYS_ADMIN), so the tests skip with the reason where it is not permitted.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve_testing import ServerFactory, make_png, poll_results, runware


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system has no byte left."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    with contextlib.suppress(OSError), open(folder / "filler-tail", "wb", buffering=0) as fh:
        while True:  # the last partial chunk
            fh.write(b"\0" * 512)
    return filler


def _video() -> dict[str, Any]:
    return {"taskType": "videoInference", "taskUUID": str(uuid.uuid4()), "model": "klingai:1@1",
            "positivePrompt": "a boat", "width": 1280, "height": 720, "duration": 5}


def _png_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(make_png()).decode()


def _temp_files(artifacts: Path) -> list[str]:
    return sorted(p.name for p in (artifacts / ".tmp").iterdir())


def test_full_disk_refuses_uploads_and_submits_with_507_in_every_dialect(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with _tmpfs(data_dir / "artifacts") as artifacts, _tmpfs(data_dir / "db") as db:
        srv = server_factory(env={"REELSERVE_WORKERS": "0", "REELSERVE_RATE_MAX_IN_FLIGHT": "0",
                                  "REELSERVE_RATE_SUBMITS_PER_MINUTE": "0",
                                  "REELSERVE_DATABASE_URL": f"sqlite:///{db}/jobs.db"},
                             data_dir=data_dir)
        with httpx.Client(base_url=srv.url, timeout=60.0) as http:
            assert runware(http, [_video()]).status_code == 200  # space left: accepted
            fillers = [_fill(artifacts), _fill(db)]

            # Uploads: Runware imageUpload, 302 input image, OpenAI input_reference.
            resp = runware(http, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                   "image": _png_uri()}])
            assert resp.status_code == 507, resp.text
            assert resp.json()["errors"][0]["code"] == "insufficientStorage", resp.text
            resp = http.post("/klingai/m2v_15_img2video", data={"prompt": "a cat"},
                             files={"input_image": ("a.png", make_png(), "image/png")})
            assert resp.status_code == 507 and resp.json()["code"] == "insufficientStorage", \
                resp.text
            resp = http.post("/v1/videos", data={"prompt": "a cat", "seconds": "5"},
                             files={"input_reference": ("a.png", make_png(), "image/png")})
            assert resp.status_code == 507, resp.text
            assert "no space" in resp.json()["error"]["message"], resp.text
            assert _temp_files(artifacts) == []

            # Submits: the job database cannot grow. SQLite may still fit a few rows into
            # pages it has, so each dialect submits until one is refused; it must be a 507.
            submits = {
                "runware": lambda: runware(http, [_video()]),
                "openai": lambda: http.post("/v1/videos", json={"prompt": "a lamp",
                                                                "size": "720x720"}),
                "kling": lambda: http.post("/v1/videos/text2video",
                                           json={"model_name": "kling-v1", "prompt": "a boat"}),
                "302": lambda: http.post("/klingai/m2v_txt2video_hq_5s", data={"prompt": "a b"}),
            }
            for dialect, submit in submits.items():
                for _ in range(300):
                    resp = submit()
                    if resp.status_code != 200:
                        break
                assert resp.status_code == 507, (dialect, resp.status_code, resp.text)
                assert "insufficientStorage" in resp.text or "no space" in resp.text, resp.text
            assert http.get("/health").status_code == 200

            # Space again: everything works, nothing was left behind.
            for filler in fillers:
                filler.unlink()
                (filler.parent / "filler-tail").unlink(missing_ok=True)
            resp = runware(http, [{"taskType": "imageUpload", "taskUUID": str(uuid.uuid4()),
                                   "image": _png_uri()}])
            assert resp.status_code == 200, resp.text
            assert runware(http, [_video()]).status_code == 200
            assert _temp_files(artifacts) == []
        srv.stop()


def test_worker_backs_off_on_a_full_disk_then_finishes(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    with _tmpfs(data_dir / "artifacts") as artifacts:
        srv = server_factory(env={"REELSERVE_WORKERS": "1",
                                  "REELSERVE_ENGINE_SELECTOR": "tiny_engine:engine_selector"},
                             data_dir=data_dir)
        filler = _fill(artifacts)
        task = _video()
        with httpx.Client(base_url=srv.url, timeout=60.0) as http:
            assert runware(http, [task]).status_code == 200
            # Rendered, refused by the disk, handed back; then retried with backoff (1, 2, 4 s).
            deadline = time.monotonic() + 120
            while "insufficientStorage" not in srv.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(8.0)
            with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db")) as conn:
                status, attempts, error = conn.execute(
                    "SELECT status, attempts, error FROM jobs WHERE task_uuid = ?",
                    (task["taskUUID"],)).fetchone()
            assert status in ("queued", "running") and attempts <= 1 and error is None, \
                (status, attempts, error, srv.log())
            log = srv.log()
            assert log.count("insufficientStorage") == 1, log  # one line for the condition
            assert "Traceback" not in log, log
            assert _temp_files(artifacts) == []
            filler.unlink()
            (artifacts / "filler-tail").unlink(missing_ok=True)
            items, errors = poll_results(http, task["taskUUID"], timeout=90)
            assert errors == [] and len(items) == 1, srv.log()
            assert http.get(items[0]["videoURL"]).status_code == 200
        with contextlib.closing(sqlite3.connect(data_dir / "reelserve.db")) as conn:
            (attempts,) = conn.execute("SELECT attempts FROM jobs WHERE task_uuid = ?",
                                       (task["taskUUID"],)).fetchone()
        assert attempts == 1  # the handed-back tries cost nothing
        assert _temp_files(artifacts) == []
        assert not os.listdir(data_dir / "work")
        srv.stop()
