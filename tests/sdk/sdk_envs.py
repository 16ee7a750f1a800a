"""Isolated environments for the official Runware client SDKs, created by the tests themselves.

Both official Python packages install the import name ``runware``, so each lives in its own
virtual environment under ``.venvs/`` at the repository root (gitignored). The JavaScript SDK is
installed with npm into ``tests/sdk/js/node_modules`` (gitignored) from the pinned
``tests/sdk/js/package.json``. Environments are reused when a marker file says they hold exactly
the pinned version; a file lock keeps two pytest processes from building the same one at once.

Nothing here talks to a package registry by host name: pip and npm use whatever index the machine
is configured with.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import venv
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
VENVS_DIR = REPO_ROOT / ".venvs"
CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
JS_DIR = Path(__file__).resolve().parent / "js"

# Pinned SDK versions (verified to install and to work against reelserve).
OLD_PY_SDK = ("runware", "0.5.24")  # WebSocket only; legacy request shapes
NEW_PY_SDK = ("runware-sdk", "1.8.0")  # websocket and rest transports
JS_SDK = ("@runware/sdk-js", "1.3.2")

INSTALL_TIMEOUT = 600.0


class SDKUnavailable(RuntimeError):
    """An SDK environment cannot be built on this machine (tests skip with this reason)."""


@dataclass(frozen=True)
class ClientRun:
    """The outcome of one client-script subprocess."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The last stdout line parsed as JSON (client scripts print exactly one such line)."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"client printed nothing; stderr:\n{self.stderr[-4000:]}")
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as exc:
            raise AssertionError(
                f"client output is not JSON: {lines[-1][:500]!r}; stderr:\n{self.stderr[-4000:]}"
            ) from exc


@contextmanager
def _locked(name: str) -> Iterator[None]:
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    with (VENVS_DIR / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], *, cwd: Path | None = None, what: str) -> None:
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SDKUnavailable(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        raise SDKUnavailable(
            f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
        )


def python_sdk(package: str, version: str) -> Path:
    """The interpreter of a virtualenv holding exactly ``package==version`` (built on first use)."""
    name = f"{package}-{version}"
    env_dir = VENVS_DIR / name
    python = env_dir / "bin" / "python"
    marker = env_dir / ".reelserve-sdk"
    wanted = f"{package}=={version}"
    with _locked(name):
        if python.exists() and marker.exists() and marker.read_text().strip() == wanted:
            return python
        if env_dir.exists():
            shutil.rmtree(env_dir)
        # with_pip: the SDKs' own dependencies (websockets, aiohttp, ...) resolve normally.
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        _run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", wanted],
            what=f"pip install {wanted}",
        )
        marker.write_text(wanted + "\n")
    return python


def old_python_sdk() -> Path:
    """Interpreter with PyPI ``runware`` 0.5.x."""
    return python_sdk(*OLD_PY_SDK)


def new_python_sdk() -> Path:
    """Interpreter with PyPI ``runware-sdk`` 1.x."""
    return python_sdk(*NEW_PY_SDK)


def js_sdk() -> tuple[Path, Path]:
    """``(node, package_dir)`` with the pinned ``@runware/sdk-js`` installed.

    Raises :class:`SDKUnavailable` when node or npm are missing.
    """
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise SDKUnavailable("node and npm are required for the JavaScript SDK tests")
    package, version = JS_SDK
    installed = JS_DIR / "node_modules" / package / "package.json"
    with _locked("sdk-js"):
        if installed.exists() and json.loads(installed.read_text()).get("version") == version:
            return Path(node), JS_DIR
        # No lock file is kept (it would record registry hosts); package.json pins the SDK.
        _run(
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
            cwd=JS_DIR,
            what=f"npm install {package}@{version}",
        )
        if not installed.exists():
            raise SDKUnavailable(f"npm install did not produce {installed}")
    return Path(node), JS_DIR


def run_client(
    interpreter: Path,
    script: Path,
    args: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    cwd: Path | None = None,
) -> ClientRun:
    """Run a client script as ``interpreter script '<json args>'`` with a hard timeout.

    The environment is the test's environment minus anything that would leak the project's
    virtualenv into the SDK's (``PYTHONPATH``, ``VIRTUAL_ENV``), plus ``env``.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            [str(interpreter), str(script), json.dumps(dict(args))],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(
            f"{script.name} hung: no result within {timeout:.0f}s\nstdout:\n{out[-3000:]}\n"
            f"stderr:\n{err[-3000:]}"
        ) from exc
    return ClientRun(proc.returncode, proc.stdout, proc.stderr)
