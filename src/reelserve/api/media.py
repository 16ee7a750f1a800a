"""Stored outputs and uploads behind signed, expiring URLs.

A URL is ``{base}/media/{outputs|uploads}/{uuid}.{ext}?exp=<unix>&sig=<hmac>``; the signature is
an HMAC-SHA256 over the key and the expiry with ``settings.url_secret`` or a random secret kept in
the data dir. A bad signature answers 404 and an expired URL 410; neither reveals the file.

The file is always streamed by this server, whatever the artifact store: with S3 from this
machine's cache (``ArtifactStore.local_path`` downloads it once), not by redirecting to a
presigned S3 URL. So clients need to reach only this server (object storage often sits on a
private network), range requests work the same everywhere, and a URL stops working exactly when
our signature says so.

Derived outputs (a video's JPEG cover) are made here on first request, for every dialect that
shows them, and stored beside the video under :func:`~reelserve.delivery.storage.derived_key`, so
they are swept with it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from reelserve.api.signing import UrlSigner
from reelserve.delivery.storage import derived_key
from reelserve.errors import ErrorKind, ReelserveError

if TYPE_CHECKING:
    from reelserve.api.services import Services
    from reelserve.delivery.storage import ArtifactInfo, ArtifactStore
    from reelserve.tasks import Job, Result

__all__ = ["NOSNIFF", "UrlSigner", "ensure_cover", "media_router"]

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
"""Headers of every media answer: browsers must not guess another type from the bytes."""

log = logging.getLogger(__name__)


def media_router(services: Services) -> APIRouter:
    """GET/HEAD /media/{kind}/{name}: serve an artifact when its URL signature and expiry are
    good (``X-Content-Type-Options: nosniff``: an upload is served as the type it was sniffed as
    when stored, never re-sniffed by a browser into HTML)."""
    router = APIRouter()

    @router.api_route("/media/{kind}/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_media(kind: str, name: str, request: Request) -> Response:
        if kind not in ("outputs", "uploads"):
            return JSONResponse({"error": "not found"}, status_code=404)
        key = f"{kind}/{name.split('.', 1)[0]}"
        status = services.signer.check(key, request.query_params.get("exp"),
                                       request.query_params.get("sig"))
        if status == 404:
            return JSONResponse({"error": "not found"}, status_code=404)
        if status == 410:
            return JSONResponse({"error": "this URL has expired"}, status_code=410)
        try:
            info, path = await run_in_threadpool(_lookup, services.artifacts, key)
        except ReelserveError as exc:
            if exc.kind is ErrorKind.UNAVAILABLE:  # the artifact store is down: try again later
                log.warning("media %s: %s", key, exc.message)
                return JSONResponse({"error": "storage is unavailable; try again later"},
                                    status_code=503)
            info = path = None  # a malformed key
        if info is None or path is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(path, media_type=info.content_type, headers=NOSNIFF)

    return router


def _lookup(artifacts: ArtifactStore, key: str) -> tuple[ArtifactInfo | None, Path | None]:
    """The artifact's facts and a local file of it (a cached download for S3: blocking)."""
    info = artifacts.info(key)
    return info, artifacts.local_path(key) if info is not None else None


def ensure_cover(services: Services, job: Job, result: Result) -> str | None:
    """Make the cover of ``result`` (its first frame as JPEG) unless it exists; returns its key.

    Blocking (PyAV decodes one frame): call from a thread. None when the video is not stored or
    has no frame.
    """
    from reelserve.media.frames import first_frame_jpeg  # lazy: no av on the server's import path

    key = derived_key(result.artifact_key, "cover")
    if services.artifacts.info(key) is not None:
        return key
    path = services.artifacts.local_path(result.artifact_key)
    if path is None:
        return None
    data = first_frame_jpeg(path, quality=85)
    if data is None:
        return None
    services.artifacts.put_bytes(key, data, content_type="image/jpeg", owner=job.owner,
                                 extension="jpg")
    return key
