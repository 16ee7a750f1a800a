"""The ArtifactStore for several machines: S3-compatible object storage through boto3.

Selected by ``REELSERVE_ARTIFACTS_URL=s3://BUCKET/PREFIX`` (needs the ``s3`` extra: ``pip install
'reelserve[s3]'``); ``REELSERVE_S3_ENDPOINT_URL`` points it at MinIO, Ceph, R2 or any other
S3-compatible server. Every API server and ``reelserve worker`` on every machine uses the same
bucket, so outputs and uploads need no shared filesystem (``docs/deployment.md``). This module is
the only one that imports boto3, and it is imported only when such a URL is configured.

Layout: the artifact ``outputs/<uuid>`` is the object ``PREFIX/outputs/<uuid>``. Its content type
is the object's ``Content-Type``; owner, creation time and extension are user metadata
(``x-amz-meta-owner``, ``-created-at``, ``-extension``). A PUT makes an object visible whole or
not at all, metadata included, so there is no sidecar to order. An object without
``created-at`` was not written by reelserve and is treated as absent.

Local files: the worker decodes inputs and probes outputs from files and ``api/media.py`` streams
files, so :meth:`S3ArtifactStore.local_path` downloads into a bounded cache under
``<data_dir>/artifact-cache`` (:class:`~reelserve.delivery.artifact_cache.ArtifactCache`: atomic,
reused, least recently used evicted beyond ``REELSERVE_ARTIFACT_CACHE_BYTES``). Each call checks
the object first (one HEAD) and names the copy by its ETag, so a copy of a deleted or replaced
object is never handed out. A file stored with ``put_file(move=True)`` (the worker's outputs) is
moved into the cache after its upload, so the worker's probe and a server on the same machine
read it without downloading it again.

Failures: an S3 error other than "no such key" (endpoint unreachable, access denied, no bucket)
becomes ``artifactStoreUnavailable`` (HTTP 503; the worker retries the job). Opening the store
checks the bucket, so a wrong URL or credentials fail at start, like the job database.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reelserve.delivery.artifact_cache import ArtifactCache
from reelserve.delivery.storage import ArtifactInfo, check_key, check_kind
from reelserve.errors import ErrorKind, ReelserveError, ValidationError

if TYPE_CHECKING:
    from reelserve.settings import Settings

__all__ = ["S3ArtifactStore"]

T = TypeVar("T")

_OWNER = "owner"
_CREATED = "created-at"
_EXTENSION = "extension"
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
# One PUT up to this size (atomic either way: a multipart object appears when it is completed).
_TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024,
                           multipart_chunksize=16 * 1024 * 1024)


class _Gone(Exception):
    """The object was deleted between its HEAD and its GET."""


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ArtifactStore:
    """Artifacts as objects in ``bucket`` under ``prefix``, with a local cache for files.

    Blocking, and safe to share between threads (boto3 clients are thread-safe). Methods
    without a docstring of their own do what :class:`~reelserve.delivery.storage.ArtifactStore`
    documents.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket (must exist).
        prefix: key prefix inside the bucket, ``""`` or ending in ``/``.
        cache: where :meth:`local_path` keeps downloaded copies.
        target: how errors name the store (no credentials in it).
    """

    def __init__(
        self, client: Any, bucket: str, prefix: str, cache: ArtifactCache, *, target: str
    ) -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = cache
        self._target = target

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ArtifactStore:
        """Open the store named by ``settings.artifacts_url`` and check that its bucket works."""
        if not settings.artifacts_url:
            raise ValueError("artifacts_url is not an s3:// URL")
        parts = urlsplit(settings.artifacts_url)
        bucket, prefix = parts.netloc, parts.path.strip("/")
        secret = settings.s3_secret_access_key
        if (settings.s3_access_key_id is None) != (secret is None):
            raise ValidationError(
                "invalidS3Credentials",
                "s3_access_key_id and s3_secret_access_key go together: set both, or neither "
                "to use the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, roles)",
                parameter="s3_access_key_id",
            )
        session = boto3.session.Session(
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret is not None else None,
            region_name=settings.s3_region,
        )
        style = settings.s3_addressing_style
        if style == "auto":  # S3-compatible servers rarely resolve bucket host names
            style = "path" if settings.s3_endpoint_url else "auto"
        client = session.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=session.region_name or "us-east-1",
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": style},
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                max_pool_connections=32,
            ),
        )
        where = settings.s3_endpoint_url or "AWS S3"
        store = cls(
            client, bucket, f"{prefix}/" if prefix else "",
            ArtifactCache(Path(settings.data_dir) / "artifact-cache",
                          settings.artifact_cache_bytes),
            target=f"s3://{bucket}/{prefix} at {where}",
        )
        store.check()
        return store

    # ------------------------------------------------------------------ plumbing

    def _unavailable(self, exc: BaseException, what: str = "") -> ReelserveError:
        detail = what or str(exc)
        return ReelserveError(
            "artifactStoreUnavailable",
            f"the artifact store ({self._target}) cannot be used: {detail}".strip(),
            parameter="artifacts_url",
            kind=ErrorKind.UNAVAILABLE,
        )

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one S3 call; any S3 failure becomes ``artifactStoreUnavailable``."""
        try:
            return fn()
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._unavailable(exc) from exc

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}{key}"

    def check(self) -> None:
        """Fail with ``artifactStoreUnavailable`` unless the bucket exists and is reachable."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket"):
                raise self._unavailable(exc, f"bucket {self.bucket!r} does not exist; create "
                                        "it first") from exc
            if code in ("403", "AccessDenied"):
                raise self._unavailable(exc, f"access to bucket {self.bucket!r} is denied; "
                                        "check the credentials") from exc
            raise self._unavailable(exc) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise self._unavailable(exc) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD response, or None when absent or not written by reelserve."""
        name = self._object(key)
        try:
            resp: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
        return resp if _CREATED in (resp.get("Metadata") or {}) else None

    @staticmethod
    def _metadata(owner: str | None, created_at: float, extension: str) -> dict[str, str]:
        # Metadata travels in HTTP headers: percent-encode so any owner or extension is ASCII.
        meta = {_CREATED: repr(created_at), _EXTENSION: quote(extension, safe="")}
        if owner is not None:
            meta[_OWNER] = quote(owner, safe="")
        return meta

    @staticmethod
    def _info(key: str, resp: dict[str, Any]) -> ArtifactInfo | None:
        meta = resp.get("Metadata") or {}
        try:
            created_at = float(meta[_CREATED])
        except (KeyError, ValueError):
            return None
        owner = meta.get(_OWNER)
        return ArtifactInfo(
            key=key,
            content_type=str(resp.get("ContentType") or "application/octet-stream"),
            size=int(resp.get("ContentLength") or 0),
            owner=unquote(owner) if owner is not None else None,
            created_at=created_at,
            extension=unquote(meta.get(_EXTENSION, "")),
        )

    # ------------------------------------------------------------------ the protocol

    def put_file(
        self, key: str, src: Path, *, content_type: str, owner: str | None = None,
        extension: str = "", move: bool = False,
    ) -> ArtifactInfo:
        """Upload ``src``; with ``move`` the file then becomes this machine's cached copy."""
        name = self._object(key)
        src = Path(src)
        size = src.stat().st_size  # a missing file fails here, before anything is written
        created_at = time.time()
        extra = {"ContentType": content_type,
                 "Metadata": self._metadata(owner, created_at, extension)}
        self._call(lambda: self._client.upload_file(
            str(src), self.bucket, name, ExtraArgs=extra, Config=_TRANSFER))
        if move:
            head = self._head(key)
            if head is not None:
                self.cache.adopt(key, str(head.get("ETag", "")), src)
            src.unlink(missing_ok=True)
        return ArtifactInfo(key, content_type, size, owner, created_at, extension)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str, owner: str | None = None,
        extension: str = "",
    ) -> ArtifactInfo:
        name = self._object(key)
        created_at = time.time()
        self._call(lambda: self._client.put_object(
            Bucket=self.bucket, Key=name, Body=data, ContentType=content_type,
            Metadata=self._metadata(owner, created_at, extension)))
        return ArtifactInfo(key, content_type, len(data), owner, created_at, extension)

    def info(self, key: str) -> ArtifactInfo | None:
        head = self._head(key)
        return self._info(key, head) if head is not None else None

    def read_bytes(self, key: str) -> bytes:
        name = self._object(key)
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=name)
            if _CREATED not in (resp.get("Metadata") or {}):
                resp["Body"].close()
                raise KeyError(key)
            with resp["Body"] as body:
                data: bytes = body.read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise KeyError(key) from exc
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
        return data

    def local_path(self, key: str) -> Path | None:
        """The cached copy of the current object, downloaded first when this machine has none."""
        head = self._head(key)
        if head is None:
            return None
        path = self.cache.get(key, str(head.get("ETag", "")))
        if path is not None:
            return path
        try:
            # Named by the ETag of what the GET returned: if the object was replaced since the
            # HEAD, the copy is of the new version and named so.
            return self.cache.fill(key, functools.partial(self._download, key))
        except _Gone:  # deleted (or replaced by a foreign object) since the HEAD
            return None

    def _download(self, key: str, dest: Path) -> str:
        """GET the object into ``dest``; returns the ETag of the version written."""
        name = self._object(key)
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=name)
            with resp["Body"] as body:
                if _CREATED not in (resp.get("Metadata") or {}):
                    raise _Gone
                with open(dest, "wb") as out:
                    shutil.copyfileobj(body, out, 1024 * 1024)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise _Gone from exc
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc
        return str(resp.get("ETag", ""))

    def delete(self, key: str) -> bool:
        """Delete the object and this machine's cached copies."""
        name = self._object(key)
        existed = self._head(key) is not None
        self._call(lambda: self._client.delete_object(Bucket=self.bucket, Key=name))
        self.cache.discard(key)
        return existed

    def list_keys(self, kind: str, *, stored_before: float | None = None) -> Iterator[str]:
        """Keys under ``PREFIX/kind/``; ``stored_before`` compares the objects' LastModified."""
        check_kind(kind)
        folder = f"{self.prefix}{kind}/"
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder)
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = f"{kind}/{str(obj['Key'])[len(folder):]}"
                    try:
                        check_key(key)
                    except ValidationError:  # an object that is not an artifact
                        continue
                    modified = obj.get("LastModified")
                    if (stored_before is not None and modified is not None
                            and modified.timestamp() >= stored_before):
                        continue
                    yield key
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
