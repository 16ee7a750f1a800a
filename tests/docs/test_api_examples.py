"""Every example of ``docs/api.md`` runs, as written, against a live server.

The fenced ``sh``/``bash`` and ``python`` blocks are taken from the page in order and run in one
bash process (so the variables of one block are there in the next, as for a reader pasting them
in order); a block whose info string says ``norun`` is skipped (e.g. starting a server). A block
passes when it exits 0 and every error code in its output is one the block itself shows in its
expected-output comments. A few outputs are checked further (videos really made, downloaded and
playable). The server has an API key and a Kling key pair, so the examples' auth is exercised.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reelserve.media.probe import probe
from reelserve_testing import ServerFactory

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "bash", "shell"}
CODE = re.compile(r'"code"\s*:\s*"(\w+)"|\'code\': \'(\w+)\'')


@dataclass(frozen=True)
class Block:
    """One fenced code block of the page."""

    index: int
    language: str
    info: str
    text: str


def blocks(text: str) -> list[Block]:
    """The runnable blocks of a Markdown page, in order."""
    found = []
    for match in FENCE.finditer(text):
        language, info, body = match.group(1), match.group(2), match.group(3)
        if "norun" in info.split() or (language not in SHELL and language != "python"):
            continue
        found.append(Block(len(found), language, info.strip(), body))
    return found


def test_the_page_has_runnable_examples_of_every_kind() -> None:
    found = blocks(DOC.read_text())
    languages = {b.language for b in found}
    assert len(found) >= 15 and {"python", "sh"} <= languages
    text = DOC.read_text()
    assert "uuidgen" not in text  # absent on a minimal Debian
    assert "--data-binary @upload.json" in text and "## WebSocket" in text
    assert "## Task management" in text and "cameraControl" in text


def photo_png(path: Path, width: int = 1280, height: int = 720) -> None:
    """A photo-sized PNG: noise does not compress, so the file is as big as a real photo's."""
    from PIL import Image

    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(path)


def noise_video(path: Path, width: int = 640, height: int = 360, frames: int = 24) -> None:
    """An H.264 MP4 of noise: a few MB, like a real short clip (PyAV)."""
    import av
    import numpy as np

    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_example_of_docs_api_md_runs(server_factory: ServerFactory, tmp_path: Path) -> None:
    srv = server_factory(env={"REELSERVE_API_KEYS": "doc-key",
                              "REELSERVE_KLING_KEYS": "ak-doc:sk-doc", "REELSERVE_WORKERS": "2"})
    work = tmp_path / "work"
    work.mkdir()
    photo_png(work / "first.png")
    noise_video(work / "input.mp4")
    # Real sizes: far over what fits in a command-line argument (~128 KiB).
    assert (work / "first.png").stat().st_size > 2_000_000
    assert (work / "input.mp4").stat().st_size > 1_000_000, (work / "input.mp4").stat().st_size

    found = blocks(DOC.read_text())
    script = ["set -euo pipefail"]
    for block in found:
        script.append(f"echo '@@block {block.index}@@'")
        if block.language == "python":
            source = work / f"block_{block.index}.py"
            source.write_text(block.text)
            script.append(f"python3 {source.name}")
        else:
            script.append(block.text)
        script.append("echo")
    env = {**os.environ, "S": srv.url, "K": "doc-key", "KLING_ACCESS_KEY": "ak-doc",
           "KLING_SECRET_KEY": "sk-doc",
           # python3 is this interpreter (reelserve, httpx, jwt and websockets installed).
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=840)
    outputs = dict(re.findall(r"@@block (\d+)@@\n(.*?)(?=@@block \d+@@|\Z)", done.stdout,
                              re.DOTALL))
    ran = len(outputs)
    assert done.returncode == 0, (f"block {ran - 1} failed:\n{found[ran - 1].text}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n"
                                  f"{done.stderr[-3000:]}")
    assert ran == len(found)

    by_heading = {}
    text = DOC.read_text()
    for block in found:
        output = outputs[str(block.index)]
        codes = {a or b for a, b in CODE.findall(output)}
        # Only the errors the block itself shows (e.g. taskNotFound) may appear.
        undocumented = {code for code in codes if code not in block.text}
        assert not undocumented, f"block {block.index}:\n{block.text}\n--- output\n{output}"
        heading = text[:text.index(block.text)].rsplit("\n## ", 1)[-1].split("\n", 1)[0]
        by_heading.setdefault(heading, []).append(output)

    def out(heading: str) -> str:
        return "".join(by_heading[heading])

    assert out("ping").strip() == '{"data":[{"taskType":"ping","pong":true}]}'
    assert out("videoInference, async (default) + getResponse").count('"videoURL"') == 1
    assert '"progress"' in out("videoInference, async (default) + getResponse")
    assert out("videoInference, sync").count('"videoURL"') == 2
    camera = out("Camera control and CFG scale")
    assert camera.count('"videoURL"') == 2 and "invalidCameraControl" in camera
    assert "video: http" in out("WebSocket")
    tasks = out("Task management: every dialect's tasks (`/v1/tasks`)")
    assert '"nextCursor"' in tasks and ('"status":"cancelled"' in tasks
                                        or '"status":"cancelling"' in tasks)
    assert len(list((work / "out").iterdir())) == 2  # the Python client's downloads
    info = probe(work / "out.mp4")  # the OpenAI-style content download
    assert (info.width, info.height) == (1280, 720)
