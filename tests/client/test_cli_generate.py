"""``python -m reelserve generate|tasks|models`` in a subprocess against a real server; outputs
are probed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from reelserve.media.probe import probe
from reelserve_testing import ServerFactory, ServerProcess, free_port, make_png


def reelserve(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelserve", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def generate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return reelserve("generate", *args, cwd=cwd)


def test_text_to_video_writes_the_file_and_prints_path_seed_cost(
        server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:1@1", "--prompt",
                    "A lighthouse at dusk, waves rolling in", "--duration", "5",
                    "--size", "720x720", "--seed", "11", "-o", "out.mp4", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["out.mp4\tseed=11\tcost=0.1848 USD"]
    info = probe(tmp_path / "out.mp4")
    assert (info.video_codec, info.width, info.height) == ("h264", 720, 720)
    assert info.num_frames == 150 and info.fps == 30
    # No progress noise with --quiet, and never an httpx request log.
    assert done.stderr == ""


def test_first_and_last_frame_several_results(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "first.png").write_bytes(make_png(960, 960, seed=1))
    (tmp_path / "last.png").write_bytes(make_png(960, 960, seed=40))
    done = generate("--url", server.url, "--model", "klingai:kling@o1-standard",
                    "--prompt", "The box slides across the frame", "--image", "first.png",
                    "--last-image", "last.png", "--duration", "5", "--size", "960x960",
                    "--format", "mov", "--number-results", "2", "--seed", "500",
                    "-o", "clip.mov", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[0] for line in lines] == ["clip-1.mov", "clip-2.mov"]
    assert sorted(line[1] for line in lines) == ["seed=500", "seed=501"]
    for name in ("clip-1.mov", "clip-2.mov"):
        info = probe(tmp_path / name)
        assert (info.container, info.width, info.height) == ("mov", 960, 960)
        assert info.num_frames == 120  # O1 renders at 24 fps


def test_refusal_prints_the_server_error_and_exits_2(server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:1@1", "--prompt", "a paper boat",
                    "--duration", "7", "-o", "never.mp4", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalidDuration: ")
    assert done.stderr.count("allowed: 5, 10") == 1  # the server says it; not repeated
    assert done.stderr.rstrip().endswith("(parameter: duration)")
    assert not (tmp_path / "never.mp4").exists()

    missing = generate("--url", server.url, "--model", "klingai:2@1", "--image", "nope.png",
                       cwd=tmp_path)
    assert missing.returncode == 2 and "invalidMediaPath" in missing.stderr

    usage = generate("--model", "klingai:1@1", "--size", "wide", cwd=tmp_path)
    assert usage.returncode == 2 and "size must look like 1280x720" in usage.stderr


def test_unreachable_server_exits_1(tmp_path: Path) -> None:
    done = generate("--url", f"http://127.0.0.1:{free_port()}", "--model", "klingai:1@1",
                    "--prompt", "a paper boat", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: serverUnreachable: cannot reach")


def _tasks(server: ServerProcess) -> list[dict[str, object]]:
    return httpx.get(f"{server.url}/v1/tasks", params={"limit": 100}).json()["data"]


def test_piped_progress_lines_camera_cfg_negative(server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:1@1", "--prompt", "a harbour",
                    "--negative", "blur", "--cfg", "0.7", "--camera", "zoom=5",
                    "--duration", "5", "--size", "720x720", "-o", "cam.mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # Plain lines (no carriage returns, no escape codes) when stderr is a pipe.
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    assert lines[0].startswith("task ") and lines[0].endswith(" submitted")
    task_uuid = lines[0].split()[1]
    assert any(" rendering " in line and "%" in line for line in lines), lines
    assert all(line.startswith(f"task {task_uuid}: ") for line in lines[1:]), lines
    request = httpx.post(f"{server.url}/v1", json=[{"taskType": "getTaskDetails",
                                                    "taskUUID": task_uuid}]).json()
    sent = request["data"][0]["request"]
    assert sent["providerSettings"] == {"klingai": {"cameraControl": {
        "type": "simple", "config": {"zoom": 5.0}}}}
    assert sent["CFGScale"] == 0.7 and sent["negativePrompt"] == "blur"
    assert probe(tmp_path / "cam.mp4").width == 720

    preset = generate("--url", server.url, "--model", "klingai:1@1", "--prompt", "a road",
                      "--camera-preset", "forward_up", "--size", "720x720", "-q",
                      "-o", "preset.mp4", cwd=tmp_path)
    assert preset.returncode == 0, preset.stderr
    bad_axis = generate("--url", server.url, "--model", "klingai:1@1", "--camera", "dolly=2",
                        cwd=tmp_path)
    assert bad_axis.returncode == 2 and "AXIS one of horizontal, vertical" in bad_axis.stderr


def test_output_path_is_checked_before_any_job(server: ServerProcess, tmp_path: Path) -> None:
    before = len(_tasks(server))
    done = generate("--url", server.url, "--model", "klingai:1@1", "--prompt", "a paper boat",
                    "-o", tmp_path / "missing" / "dir" / "x.mp4", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: invalidOutputPath: cannot write the video to ")
    assert "does not exist; nothing was submitted" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(_tasks(server)) == before


def test_model_not_found_lists_the_models_once(server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:9@9", "--prompt", "x", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("error: modelNotFound: model 'klingai:9@9' is not in the catalog")
    assert done.stderr.count("klingai:1@1") == 1 and "models on this server:" in done.stderr
    assert done.stderr.count("klingai:kling@o1-standard") == 1


def test_api_key_on_a_keyless_server_warns(server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--api-key", "wrong", "--model", "klingai:1@1",
                    "--prompt", "a kite", "--size", "720x720", "-q", "-o", "kite.mp4",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("warning: this server has no API keys")


def test_wrong_key_on_a_keyed_server_is_refused_before_upload(
        server_factory: ServerFactory, tmp_path: Path) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "key-a", "REELSERVE_WORKERS": "0"})
    (tmp_path / "first.png").write_bytes(make_png(64, 64))
    done = generate("--url", srv.url, "--api-key", "wrong", "--model", "klingai:2@1",
                    "--image", "first.png", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: invalidApiKey: ")
    assert not (srv.data_dir / "artifacts" / "uploads").exists() or not any(
        (srv.data_dir / "artifacts" / "uploads").iterdir())


def test_tasks_list_show_cancel_download(server_factory: ServerFactory, tmp_path: Path) -> None:
    srv = server_factory(env={"REELSERVE_WORKERS": "1"})
    url = ("--url", srv.url)
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        quick = "7c1d1b6e-0a7b-4c1e-9a55-0c4a2e8b1f10"
        http.post("/v1", json=[{"taskType": "videoInference", "taskUUID": quick,
                                "model": "klingai:1@1", "positivePrompt": "a lamp",
                                "width": 720, "height": 720, "duration": 5}])
        deadline = time.monotonic() + 60
        while http.get(f"/v1/tasks/{quick}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        long = http.post("/v1/videos", json={"model": "klingai:5@3", "prompt": "slow sunset",
                                             "seconds": "10", "size": "1920x1080"}).json()
        # The OpenAI-style job is listed under its taskUUID and found by its id too.
        long_uuid = http.get(f"/v1/tasks/{long['id']}").json()["taskUUID"]

    listed = reelserve("tasks", "list", *url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["TASK", "STATUS", "PROGRESS", "MODEL", "ORIGIN", "CREATED",
                               "(UTC)", "PROMPT"]
    assert rows[1].split()[0] == long_uuid and rows[2].split()[:2] == [quick, "succeeded"]
    as_json = json.loads(reelserve("tasks", "list", *url, "--status", "succeeded", "--json",
                                   cwd=tmp_path).stdout)
    assert [t["taskUUID"] for t in as_json["data"]] == [quick]

    shown = reelserve("tasks", "show", *url, quick, cwd=tmp_path)
    assert shown.returncode == 0 and "status: succeeded" in shown.stdout
    assert "result: http" in shown.stdout

    cancelled = reelserve("tasks", "cancel", *url, long["id"], cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split("\t")[1].strip() in ("cancelling", "cancelled")

    got = reelserve("tasks", "download", *url, quick, "-o", "lamp.mp4", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("lamp.mp4\tseed=")
    assert probe(tmp_path / "lamp.mp4").width == 720
    nothing = reelserve("tasks", "download", *url, long["id"], cwd=tmp_path)
    assert nothing.returncode in (1, 2) and nothing.stderr.startswith("error: noResults: ")
    missing = reelserve("tasks", "show", *url, "no-such-task", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: taskNotFound: ")


def test_models_lists_the_catalog_and_what_renders_it(tmp_path: Path) -> None:
    done = reelserve("models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[0].split() == ["MODEL", "NAME", "WORKFLOW", "RENDERED", "BY"]
    assert any(r.startswith("klingai:1@1 ") and r.endswith("preview engine") for r in rows)
    assert "every model renders with the CPU preview engine" in done.stdout
    # The GPU profile listing keeps its old name and gains a clearer one.
    for name in ("list", "profiles"):
        profiles = reelserve("models", name, cwd=tmp_path)
        assert profiles.returncode == 2 and "no profiles configured" in profiles.stdout


def test_terminal_gets_a_live_progress_bar(server: ServerProcess, tmp_path: Path) -> None:
    import os
    import pty

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reelserve", "generate", "--url", server.url, "--model",
         "klingai:1@1", "--prompt", "a lit window", "--size", "720x720", "-o", "tty.mp4"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=terminal, text=True,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        shown += chunk
    stdout, _ = proc.communicate(timeout=120)
    os.close(controller)
    assert proc.returncode == 0, shown.decode(errors="replace")
    assert stdout.startswith("tty.mp4\tseed=")
    text = shown.decode(errors="replace")
    # rich redraws one line in place: status, bar, percent, elapsed and remaining time.
    assert "\x1b[" in text and "100%" in text and "elapsed" in text and "eta" in text
    assert "rendering" in text or "queued" in text


def test_timeout_names_the_commands_that_continue(server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:5@3", "--prompt", "slow sunset",
                    "--duration", "10", "--size", "1920x1080", "--timeout", "0.5", "-q",
                    cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: timeoutClient: task ")
    task_uuid = done.stderr.split()[3]
    assert f"`reelserve tasks cancel {task_uuid}`" in done.stderr
    # ... and that command stops it.
    cancelled = reelserve("tasks", "cancel", "--url", server.url, task_uuid, cwd=tmp_path)
    assert cancelled.returncode == 0
    assert cancelled.stdout.split("\t")[1].strip() in ("cancelling", "cancelled")
