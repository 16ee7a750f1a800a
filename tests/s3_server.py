"""A private S3-compatible server for tests (importable as ``s3_server``).

The ``s3_server`` fixture (session scope) runs moto's standalone server (``python -m moto.server``,
from the ``moto[server]`` test extra) in a subprocess on a free loopback port: a real HTTP S3
endpoint, reached by boto3 and by ``reelserve serve``/``worker`` subprocesses over TCP like any
MinIO or AWS endpoint, not an in-process mock. ``s3_bucket`` gives a test a fresh bucket on it
and the settings/environment that point reelserve at it.

Without moto or boto3 the tests that need them are skipped with a loud reason; where the ``CI``
environment variable is set they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelserve_testing import free_port

ACCESS_KEY = "reelserve-test"
SECRET_KEY = "reelserve-test-secret"
REGION = "us-east-1"


class MotoServer:
    """``python -m moto.server`` on ``127.0.0.1:<port>``, its log in a temp file."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="reelserve-s3-")) / "moto.log"
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        """Start the server and wait until it answers HTTP."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.log_path.parent.rmdir()

    def client(self) -> Any:
        """A boto3 client on the server (for checking what reelserve wrote); made once."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION,
        ).client("s3", endpoint_url=self.endpoint,
                 config=Config(s3={"addressing_style": "path"}))


@dataclass
class S3Bucket:
    """A fresh bucket on the test server and how to point reelserve at it."""

    server: MotoServer
    name: str
    prefix: str
    client: Any = field(repr=False)

    @property
    def url(self) -> str:
        """``REELSERVE_ARTIFACTS_URL``."""
        return f"s3://{self.name}/{self.prefix}"

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Settings fields that select the S3 store (credentials as settings fields)."""
        return {"artifacts_url": self.url, "s3_endpoint_url": self.server.endpoint,
                "s3_region": REGION, "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SECRET_KEY, **extra}

    def env(self) -> dict[str, str]:
        """Environment for reelserve subprocesses (credentials from the standard AWS variables,
        no region: the store's us-east-1 default is used)."""
        return {"REELSERVE_ARTIFACTS_URL": self.url,
                "REELSERVE_S3_ENDPOINT_URL": self.server.endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def object_key(self, key: str) -> str:
        """The object name of artifact ``key``."""
        return f"{self.prefix}/{key}"

    def object_names(self) -> list[str]:
        """Every object name in the bucket."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def unavailable_reason() -> str | None:
    """Why no test S3 server can be started here, or None when one can."""
    import importlib.util

    for module, extra in (("boto3", "s3"), ("moto", "test")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """A moto S3 server for the whole session (skipped, or failed on CI, without moto)."""
    reason = unavailable_reason()
    if reason is not None:
        message = f"S3 NOT TESTED: {reason}"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: the S3 tests must run there)", pytrace=False)
        pytest.skip(message)
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> S3Bucket:
    """A fresh, empty bucket for this test."""
    client = s3_server.client()
    name = f"reelserve-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(s3_server, name, "tenant-a", client)
