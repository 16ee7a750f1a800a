"""Fixtures for the official-SDK tests: a real server with an API key, SDK environments, a frame.

Each SDK module runs its client script once (all scenarios concurrently, each under its own
timeout, the whole process under a hard subprocess timeout) and its tests assert on one scenario
each, so a hang shows up as a failure within seconds instead of a stuck session.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sdk_envs
from sdk_checks import API_KEY

from reelserve_testing import ServerProcess, make_png


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real ``reelserve serve`` with one API key (so bad keys are refused) and one worker."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("sdk-server"),
        {"REELSERVE_API_KEYS": API_KEY, "REELSERVE_WORKERS": "1"},
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def frame_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 720x720 PNG on disk: the 'local file' the SDKs read themselves."""
    path = tmp_path_factory.mktemp("frames") / "first-frame.png"
    path.write_bytes(make_png(720, 720, seed=3))
    return path


def _python(build: Any) -> Path:
    try:
        return Path(build())
    except sdk_envs.SDKUnavailable as exc:
        pytest.fail(f"cannot build the SDK environment: {exc}")


@pytest.fixture(scope="session")
def old_sdk_python() -> Path:
    """Interpreter of the ``runware`` 0.5.x virtualenv."""
    return _python(sdk_envs.old_python_sdk)


@pytest.fixture(scope="session")
def new_sdk_python() -> Path:
    """Interpreter of the ``runware-sdk`` 1.x virtualenv."""
    return _python(sdk_envs.new_python_sdk)


@pytest.fixture(scope="session")
def js_sdk() -> tuple[Path, Path]:
    """``(node, dir)`` with ``@runware/sdk-js`` installed; skipped without node/npm."""
    import shutil

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the JavaScript SDK tests need them")
    try:
        return sdk_envs.js_sdk()
    except sdk_envs.SDKUnavailable as exc:
        pytest.fail(f"cannot install the JavaScript SDK: {exc}")
