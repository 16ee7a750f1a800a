"""Where output videos and uploaded media live: the ArtifactStore seam.

Keys are ``outputs/<videoUUID>`` for generated videos and ``uploads/<mediaUUID>`` for media sent
with ``imageUpload``/``mediaStorage``. Each artifact has a small JSON sidecar with its content
type, owner and creation time, so a UUID is all one needs to find it again (as a task input or
behind a signed URL). The local-disk implementation writes atomically (temp file + rename), so a
crash never leaves a half-written artifact under its final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from reelserve.errors import ValidationError

OUTPUTS = "outputs"
UPLOADS = "uploads"


@dataclass(frozen=True)
class ArtifactInfo:
    """Facts about a stored artifact."""

    key: str
    content_type: str
    size: int
    owner: str | None
    created_at: float
    extension: str = ""


@runtime_checkable
class ArtifactStore(Protocol):
    """Blob storage for outputs and uploads. Blocking: call from threads, not the event loop."""

    def put_file(
        self, key: str, src: Path, *, content_type: str, owner: str | None = None,
        extension: str = "", move: bool = False,
    ) -> ArtifactInfo:
        """Store the file at ``src`` under ``key`` (moving it when ``move``)."""
        ...

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, owner: str | None = None,
        extension: str = "",
    ) -> ArtifactInfo:
        """Store ``data`` under ``key``."""
        ...

    def info(self, key: str) -> ArtifactInfo | None:
        """Metadata of ``key``, or None when absent."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole artifact (KeyError when absent)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file holding the artifact, when the store has one (for zero-copy serving)."""
        ...

    def delete(self, key: str) -> bool:
        """Remove the artifact; False when it did not exist."""
        ...


def _check_key(key: str) -> None:
    parts = key.split("/")
    if (len(parts) != 2 or parts[0] not in (OUTPUTS, UPLOADS) or not parts[1]
            or not all(c.isalnum() or c in "-_" for c in parts[1])):
        raise ValidationError(
            "invalidArtifactKey",
            f"artifact key {key!r} is not valid; expected 'outputs/<uuid>' or 'uploads/<uuid>'",
            parameter="key",
        )


class LocalArtifactStore:
    """Artifacts as files under ``root`` (normally ``<data_dir>/artifacts``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in (OUTPUTS, UPLOADS, ".tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _write_meta(self, key: str, info: ArtifactInfo) -> None:
        meta = self._path(key).with_suffix(".json")
        tmp = self.root / ".tmp" / f"{secrets.token_hex(8)}.json"
        tmp.write_text(json.dumps(asdict(info)))
        os.replace(tmp, meta)

    def put_file(
        self, key: str, src: Path, *, content_type: str, owner: str | None = None,
        extension: str = "", move: bool = False,
    ) -> ArtifactInfo:
        """Copy (or move) ``src`` in atomically, then write the sidecar."""
        dest = self._path(key)
        tmp = self.root / ".tmp" / secrets.token_hex(8)
        if move:
            try:
                os.replace(src, tmp)
            except OSError:  # another filesystem: copy instead
                shutil.copyfile(src, tmp)
                Path(src).unlink(missing_ok=True)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        info = ArtifactInfo(key, content_type, dest.stat().st_size, owner, time.time(), extension)
        # The sidecar is written last: an artifact without one is treated as absent.
        self._write_meta(key, info)
        return info

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, owner: str | None = None,
        extension: str = "",
    ) -> ArtifactInfo:
        """Write ``data`` atomically, then the sidecar."""
        dest = self._path(key)
        fd, tmp_name = tempfile.mkstemp(dir=self.root / ".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp_name, dest)
        info = ArtifactInfo(key, content_type, len(data), owner, time.time(), extension)
        self._write_meta(key, info)
        return info

    def info(self, key: str) -> ArtifactInfo | None:
        """Read the sidecar; None when the artifact is absent or incomplete."""
        path = self._path(key)
        meta = path.with_suffix(".json")
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        if not path.exists():
            return None
        return ArtifactInfo(**data)

    def read_bytes(self, key: str) -> bytes:
        """The artifact's bytes."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def local_path(self, key: str) -> Path | None:
        """The file itself."""
        path = self._path(key)
        return path if path.exists() else None

    def delete(self, key: str) -> bool:
        """Remove the sidecar first (so the artifact disappears at once), then the file."""
        path = self._path(key)
        existed = path.with_suffix(".json").exists()
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return existed


def open_artifacts(data_dir: Path) -> LocalArtifactStore:
    """The default artifact store inside ``data_dir``."""
    return LocalArtifactStore(Path(data_dir) / "artifacts")


def url_secret(data_dir: Path, configured: str | None) -> bytes:
    """The key that signs media URLs: ``configured`` or a random one persisted in ``data_dir``.

    Persisting it keeps URLs valid across restarts and shared with a separate worker process.
    """
    if configured:
        return configured.encode()
    path = Path(data_dir) / "url_secret"
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{secrets.token_hex(4)}")
    tmp.write_text(secrets.token_hex(32))
    os.chmod(tmp, 0o600)
    try:
        with contextlib.suppress(FileExistsError):  # another process won the race: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def owned_media_path(artifacts: ArtifactStore, media_uuid: str, owner: str) -> Path | None:
    """Local file of an upload or earlier output named by ``media_uuid``, if ``owner`` may use it.

    The one place that decides whose media a UUID may reach: another key's uploads and outputs
    are invisible (as if absent), so a guessed or leaked UUID never crosses owners.
    """
    for prefix in (UPLOADS, OUTPUTS):
        key = f"{prefix}/{media_uuid}"
        try:
            info = artifacts.info(key)
        except ValidationError:  # not a UUID-shaped key at all
            return None
        if info is not None and info.owner in (None, owner):
            return artifacts.local_path(key)
    return None

