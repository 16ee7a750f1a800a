"""The playground page served at ``GET /``: static HTML, CSS and JS, no build step.

The page talks to this server only: ``POST /v1`` (modelSearch, imageUpload, videoInference
async, getResponse, getTaskDetails) and the task API (``GET /v1/tasks``, ``POST
/v1/tasks/{taskUUID}/cancel``) for its history; it loads nothing from another origin, and the
Content-Security-Policy sent with it enforces both. The files are package data, read once when
the router is built. ``/favicon.ico`` is served too (browsers ask for it on every page).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

# Where the page's own assets live (index.html names them).
ASSET_PREFIX = "/playground"

_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}

# Scripts and styles from this origin only (no inline code), API calls to this origin only.
# Videos may come from another host: output URLs follow REELSERVE_PUBLIC_URL or object storage.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' http: https: blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # Signed output URLs must not leak to other sites through the Referer header.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def playground_router() -> APIRouter:
    """``GET /`` (the page), ``GET /playground/{app.js,app.css}`` (its assets) and
    ``GET /favicon.ico``."""
    router = APIRouter()
    page = _read("index.html")
    assets = {name: (_read(name), media_type) for name, media_type in _ASSETS.items()}

    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        body, media_type = found
        return Response(body, media_type=media_type, headers=_HEADERS)

    icon = _read("favicon.ico")

    async def favicon() -> Response:
        return Response(icon, media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    router.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    router.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    router.add_api_route(f"{ASSET_PREFIX}/{{name}}", asset, methods=["GET"],
                         include_in_schema=False)
    return router


__all__ = ["CONTENT_SECURITY_POLICY", "playground_router"]
