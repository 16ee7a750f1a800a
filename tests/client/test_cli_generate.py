"""``python -m reelserve generate`` in a subprocess against a real server; outputs are probed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reelserve.media.probe import probe
from reelserve_testing import ServerProcess, free_port, make_png


def generate(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelserve", "generate", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_text_to_video_writes_the_file_and_prints_path_seed_cost(
        server: ServerProcess, tmp_path: Path) -> None:
    done = generate("--url", server.url, "--model", "klingai:1@1", "--prompt",
                    "A lighthouse at dusk, waves rolling in", "--duration", "5",
                    "--size", "720x720", "--seed", "11", "-o", "out.mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["out.mp4\tseed=11\tcost=0.1848 USD"]
    info = probe(tmp_path / "out.mp4")
    assert (info.video_codec, info.width, info.height) == ("h264", 720, 720)
    assert info.num_frames == 150 and info.fps == 30
    # No progress noise and no httpx request log when stderr is not a terminal.
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
