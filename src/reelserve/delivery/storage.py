"""Where output videos and uploaded media live: the ArtifactStore seam.

Keys are ``outputs/<videoUUID>`` for generated videos and ``uploads/<mediaUUID>`` for media sent
with ``imageUpload``/``mediaStorage``; artifacts made from an output (its JPEG cover) live beside
it as ``outputs/<videoUUID>_<name>`` (:func:`derived_key`) and go with it (:func:`delete_output`).
Each artifact carries its content type, owner, creation
time and extension, so a UUID is all one needs to find it again (as a task input or behind a
signed URL). Two implementations pass one contract suite (``tests/delivery/
test_artifact_contract.py``):

* :class:`LocalArtifactStore` (the default): files under ``<data_dir>/artifacts`` with a small
  JSON sidecar each, written atomically (temp file + rename), so a crash never leaves a
  half-written artifact under its final name.
* :class:`~reelserve.delivery.s3.S3ArtifactStore` (``REELSERVE_ARTIFACTS_URL=s3://BUCKET/PREFIX``):
  objects in S3-compatible storage, shared by every machine without a shared filesystem; the
  facts are object metadata, and :meth:`ArtifactStore.local_path` downloads into a bounded local
  cache. Its module (and boto3) is imported only when such a URL is configured.

:func:`reelserve.delivery.open_artifacts` picks one from the settings.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from reelserve.errors import StorageFullError, ValidationError, storage_full

if TYPE_CHECKING:
    from pydantic import SecretStr

OUTPUTS = "outputs"
UPLOADS = "uploads"

DERIVED = ("cover",)
"""Names of the artifacts derived from an output, stored beside it by :func:`derived_key`.

``cover``: the first frame as JPEG, made on first request for 302-style and OpenAI-style
clients. Registered here rather than in the dialects, so that whatever deletes an output (the
sweeper, an OpenAI-style DELETE) deletes these with it through :func:`delete_output`.
"""


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
        """A local file holding the artifact (None when absent), for serving and decoding.

        The file itself for the local store; a cached download for a remote one (may download:
        blocking). Treat it as read-only.
        """
        ...

    def delete(self, key: str) -> bool:
        """Remove the artifact; False when it did not exist."""
        ...

    def list_keys(self, kind: str, *, stored_before: float | None = None) -> Iterator[str]:
        """Keys of the stored artifacts of ``kind`` (``outputs`` or ``uploads``).

        ``stored_before`` (unix seconds) is a cheap pre-filter for sweeping: only artifacts the
        listing shows as written before it are listed (sidecar mtimes, object LastModified), so
        a remote store need not fetch every object's metadata. It is a hint that may be off by
        the time a write took (or by clock differences): callers decide on
        :meth:`info`'s ``created_at``.
        """
        ...


def check_kind(kind: str) -> None:
    """Refuse an artifact kind other than ``outputs`` and ``uploads``."""
    if kind not in (OUTPUTS, UPLOADS):
        raise ValidationError(
            "invalidArtifactKind", f"artifact kind {kind!r} is not valid",
            parameter="kind", allowed_values=[OUTPUTS, UPLOADS],
        )


def check_key(key: str) -> None:
    """Refuse a key that is not ``outputs/<uuid>`` or ``uploads/<uuid>`` (``invalidArtifactKey``).

    The name part allows letters, digits, ``-`` and ``_`` only, so a key never escapes its folder
    or prefix, whatever the store.
    """
    parts = key.split("/")
    if (len(parts) != 2 or parts[0] not in (OUTPUTS, UPLOADS) or not parts[1]
            or not all(c.isalnum() or c in "-_" for c in parts[1])):
        raise ValidationError(
            "invalidArtifactKey",
            f"artifact key {key!r} is not valid; expected 'outputs/<uuid>' or 'uploads/<uuid>'",
            parameter="key",
        )


def derived_key(output_key: str, name: str) -> str:
    """Key of the artifact ``name`` made from the output ``output_key``: ``outputs/<uuid>_<name>``.

    Raises:
        ValueError: ``name`` is not in :data:`DERIVED` (nothing would ever delete it), or
            ``output_key`` is not an output's key.
    """
    if name not in DERIVED:
        raise ValueError(f"derived artifact name {name!r} is not registered; allowed: "
                         f"{', '.join(DERIVED)} (add it to DERIVED so it is deleted with its output)")
    if not output_key.startswith(f"{OUTPUTS}/"):
        raise ValueError(f"artifact key {output_key!r} is not an output's ('outputs/<uuid>')")
    key = f"{output_key}_{name}"
    check_key(key)
    return key


def delete_output(artifacts: ArtifactStore, output_key: str) -> bool:
    """Delete an output and the artifacts derived from it; True when the output existed.

    The derived ones go first: should this stop half-way, the output is still there, so the next
    attempt (the sweeper's next pass) finds it and deletes what is left.
    """
    for name in DERIVED:
        artifacts.delete(derived_key(output_key, name))
    return artifacts.delete(output_key)


class LocalArtifactStore:
    """Artifacts as files under ``root`` (normally ``<data_dir>/artifacts``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for sub in (OUTPUTS, UPLOADS, ".tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        remove_stale_temp(self.root / ".tmp")

    @contextlib.contextmanager
    def _landing(self, key: str) -> Iterator[Path]:
        """A fresh temp path in ``.tmp`` for one write of ``key``.

        When the write fails, whatever it left is removed (the temp file, and the artifact when
        only its sidecar failed), so a full disk leaves no partial file behind; a full disk
        raises ``insufficientStorage`` (:class:`~reelserve.errors.StorageFullError`).
        """
        tmp = self.root / ".tmp" / secrets.token_hex(8)
        try:
            yield tmp
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and is_disk_full(exc):
                with contextlib.suppress(OSError):
                    self._path(key).unlink(missing_ok=True)
                raise storage_full("artifact storage", exc) from exc
            raise

    def _path(self, key: str) -> Path:
        check_key(key)
        return self.root / key

    def _write_meta(self, key: str, info: ArtifactInfo) -> None:
        meta = self._path(key).with_suffix(".json")
        with self._landing(key) as tmp:
            tmp.write_text(json.dumps(asdict(info)))
            os.replace(tmp, meta)

    def put_file(
        self, key: str, src: Path, *, content_type: str, owner: str | None = None,
        extension: str = "", move: bool = False,
    ) -> ArtifactInfo:
        """Copy (or move) ``src`` in atomically, then write the sidecar."""
        dest = self._path(key)
        with self._landing(key) as tmp:
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
        with self._landing(key) as tmp:
            with open(tmp, "xb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
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

    def list_keys(self, kind: str, *, stored_before: float | None = None) -> Iterator[str]:
        """Keys with a sidecar; ``stored_before`` compares the sidecar's mtime (written last)."""
        check_kind(kind)
        for meta in (self.root / kind).glob("*.json"):
            key = f"{kind}/{meta.stem}"
            try:
                check_key(key)
                if stored_before is not None and meta.stat().st_mtime >= stored_before:
                    continue
            except (ValidationError, OSError):  # a stray file, or deleted meanwhile
                continue
            yield key


STALE_TEMP_SECONDS = 3600.0
"""Temp files older than this are left over from a write a crash interrupted (no write of
one artifact takes that long); :func:`remove_stale_temp` removes them."""


def remove_stale_temp(folder: Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Remove the files in ``folder`` not modified for ``older_than`` seconds; how many.

    Called when a store opens: a process killed in the middle of a write (kill -9, power loss)
    leaves its temp file behind, and nothing else would ever remove it. Younger files may be
    writes in flight in another process sharing the folder, so they stay.
    """
    removed = 0
    cutoff = time.time() - older_than
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is "no space left" / "quota exceeded"."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFullError):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


def url_secret(data_dir: Path, configured: SecretStr | None) -> bytes:
    """The key that signs media URLs: ``configured`` or a random one persisted in ``data_dir``.

    Persisting it keeps URLs valid across restarts and shared with a separate worker process.
    """
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value().encode()
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

