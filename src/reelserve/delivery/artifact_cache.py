"""A bounded local cache of remote artifacts, for stores whose artifacts are not local files.

The worker decodes inputs and probes outputs from files, and ``api/media.py`` streams files, so
:class:`~reelserve.delivery.s3.S3ArtifactStore` keeps local copies here (normally
``<data_dir>/artifact-cache``). Layout: ``<root>/<kind>/<name>@<version>``, where ``version`` is
the object's ETag: a key overwritten remotely gets a new file, so a stale copy is never served
for the new content.

Writes are atomic (download into ``<root>/.tmp``, then rename), so a file under its final name is
always complete, and several processes may share one cache directory (the server and
``reelserve worker`` on one data dir): two that fetch the same artifact at once both rename a
complete copy into place.

Eviction: least recently used first. A hit refreshes the file's mtime; after each new file the
cache is scanned and the oldest files are removed until the total is within ``max_bytes``. Files
used in the last ``keep_recent`` seconds are never evicted, so a response being streamed or an
input being decoded keeps its file; the bound is exceeded for a while only when more than
``max_bytes`` is in use at once. Deleting an artifact through the store removes its copies here
at once; copies in other machines' caches are never served again (the store checks the object
before it answers from the cache) and age out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["ArtifactCache"]

_TMP = ".tmp"
_STALE_TMP = 3600.0  # a temp file this old belongs to a crashed download


def _version_part(version: str) -> str:
    """An ETag (or any version string) reduced to a safe file name part."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "", version)[:64]
    return cleaned or "0"


class ArtifactCache:
    """Local copies of artifacts keyed by (key, version), bounded by size.

    Args:
        root: the cache directory (created if missing).
        max_bytes: size the cache is trimmed to after each new file.
        keep_recent: seconds since its last use during which a file is never evicted.
        clock: wall clock (seconds); a seam for tests.
    """

    def __init__(
        self, root: Path, max_bytes: int, *, keep_recent: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.keep_recent = keep_recent
        self.clock = clock
        (self.root / _TMP).mkdir(parents=True, exist_ok=True)

    def path_for(self, key: str, version: str) -> Path:
        """Where the copy of ``key`` at ``version`` lives (``key`` is already validated)."""
        kind, name = key.split("/", 1)
        return self.root / kind / f"{name}@{_version_part(version)}"

    def get(self, key: str, version: str) -> Path | None:
        """The cached copy, marked as just used; None on a miss."""
        path = self.path_for(key, version)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def fill(self, key: str, write: Callable[[Path], str]) -> Path:
        """Create a copy with ``write(temp_path)``, which returns the version it wrote, and move
        it into place atomically under that version."""
        tmp = self.root / _TMP / secrets.token_hex(8)
        try:
            version = write(tmp)
            return self._install(key, version, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def adopt(self, key: str, version: str, src: Path) -> Path:
        """Move ``src`` (a file just uploaded as ``key``) in as the copy of ``version``."""
        tmp = self.root / _TMP / secrets.token_hex(8)
        try:
            try:
                os.replace(src, tmp)
            except OSError:  # another filesystem: copy instead
                shutil.copyfile(src, tmp)
                Path(src).unlink(missing_ok=True)
            return self._install(key, version, tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _install(self, key: str, version: str, tmp: Path) -> Path:
        path = self.path_for(key, version)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        self.evict(keep=path)
        return path

    def discard(self, key: str) -> None:
        """Remove every cached version of ``key``."""
        kind, name = key.split("/", 1)
        for path in (self.root / kind).glob(f"{name}@*"):
            path.unlink(missing_ok=True)

    def evict(self, keep: Path | None = None) -> int:
        """Trim to ``max_bytes``, oldest use first; returns the bytes removed."""
        now = self.clock()
        entries: list[tuple[float, int, Path]] = []
        total = 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            with os.scandir(folder) as it:
                for entry in it:
                    with contextlib.suppress(FileNotFoundError):  # another process removed it
                        stat = entry.stat()
                        if folder.name == _TMP:
                            if stat.st_mtime < now - _STALE_TMP:
                                Path(entry.path).unlink(missing_ok=True)
                            continue
                        total += stat.st_size
                        entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        removed = 0
        if total <= self.max_bytes:
            return 0
        for mtime, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if path == keep or mtime > now - self.keep_recent:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += size
        if total > self.max_bytes:
            log.debug("artifact cache %s holds %d bytes (bound %d): the rest is in use",
                      self.root, total, self.max_bytes)
        return removed
