"""What every route shares against hostile input and hostile web pages (docs/security.md).

- (Values inside bodies and queries are read by :mod:`reelserve.api.parsing`.)
- :class:`BodyLimitMiddleware`: ``settings.max_body_bytes`` for every HTTP route. The cap is
  applied while the body streams in; a body declared or found larger is refused with
  ``payloadTooLarge`` raised inside the route's own ``receive``, so the route's dialect renders it
  in its own envelope (:func:`~reelserve.api.serving.dialect_route`).
- :class:`ClientGuardMiddleware`: a server with no API keys trusts its loopback clients, which a
  web page in the user's browser also is. It answers only Host names it is known by (DNS
  rebinding), refuses writes and WebSocket handshakes from foreign browser origins, and refuses
  request bodies of a type no route speaks (``text/plain``: the cross-site "simple request").
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelserve.api.parsing import ascii_int
from reelserve.api.serving import UNSUPPORTED_MEDIA_CODE, error_response_for
from reelserve.errors import ErrorKind, ReelserveError

if TYPE_CHECKING:
    from reelserve.settings import Settings


# ================================================================================================
# Body size
# ================================================================================================


class BodyTooLarge(ReelserveError):
    """A request body over ``REELSERVE_MAX_BODY_BYTES`` (413 ``payloadTooLarge``)."""

    default_kind = ErrorKind.TOO_LARGE

    def __init__(self, cap: int) -> None:
        super().__init__(
            "payloadTooLarge", f"the request body is larger than the {cap} byte limit "
            "(REELSERVE_MAX_BODY_BYTES); upload big media with mediaStorage or pass a URL",
            parameter="body")


class BodyLimitMiddleware:
    """Cap every HTTP request body at ``max_bytes`` while it streams in.

    Nothing buffers here: the route reads as usual, and the read that would pass the cap raises
    :class:`BodyTooLarge` (a ``ReelserveError``) inside the route, which renders it in its
    dialect's envelope. Before raising, an oversized body is drained and discarded up to 4x the
    cap, so a client still uploading reads the 413 instead of a reset connection; a body declared
    (``Content-Length``) larger than that is refused at the first read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_bytes
        declared = ascii_int(_header(scope, b"content-length"), max_digits=30)
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            if declared is not None and declared > 4 * cap:
                raise BodyTooLarge(cap)
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received > cap or (declared is not None and declared > cap):
                while message.get("more_body") and received <= 4 * cap:
                    message = await receive()
                    if message["type"] != "http.request":
                        break
                    received += len(message.get("body", b""))
                raise BodyTooLarge(cap)
            return message

        await self.app(scope, capped_receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


# ================================================================================================
# Host, Origin and content type of a keyless server
# ================================================================================================

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "testserver"})
"""Host names a keyless server always answers (``testserver``: Starlette's in-process client)."""

_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Body types some route parses; any other (text/plain above all) is refused on a keyless server.
_BODY_TYPES = frozenset({"application/json", "multipart/form-data",
                         "application/x-www-form-urlencoded"})
# Probes that reveal nothing answer whatever Host a load balancer or kubelet sends.
_UNGUARDED_PATHS = frozenset({"/health", "/ready"})


def _host_name(host: str) -> str:
    """The name of a ``Host`` value without its port (``[::1]:8000`` -> ``::1``), lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{(parts.netloc or '').lower()}"


class ClientGuardMiddleware:
    """Host, Origin and content-type checks of a server with no API keys (``api_keys`` empty).

    Such a server trusts loopback clients, and a page open in the user's browser is one:
    through DNS rebinding (its own name resolving to 127.0.0.1), a cross-site form or
    ``text/plain`` POST, or a cross-site WebSocket. So, unless keys are configured:

    - the ``Host`` must be a loopback name, ``public_url``'s host, the bound host or one of
      ``REELSERVE_ALLOWED_HOSTS`` (403 ``invalidHost``);
    - a write (POST/PUT/PATCH/DELETE) or WebSocket handshake carrying an ``Origin`` must come
      from the server itself (the Host it was sent to, or ``public_url``) or one of
      ``REELSERVE_ALLOWED_ORIGINS`` (403 ``forbiddenOrigin``);
    - a write's body must be JSON or a form (415 ``unsupportedMediaType``).

    Refusals use the matched route's dialect envelope (:func:`~reelserve.api.serving.
    error_response_for`). With API keys, a page cannot act without a key, so nothing is checked.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = not settings.api_keys
        hosts = set(LOOPBACK_NAMES)
        hosts.add(_host_name(urlsplit(settings.base_url).netloc))
        if settings.host not in ("0.0.0.0", "::", ""):
            hosts.add(_host_name(settings.host))
        hosts.update(_host_name(h) for h in settings.allowed_hosts)
        self.any_host = "*" in settings.allowed_hosts
        self.hosts = frozenset(hosts)
        self.origins = frozenset({_origin_of(settings.base_url),
                                  *(_origin_of(o) for o in settings.allowed_origins)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return

        if scope["type"] == "websocket":
            # Closing before accepting answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})
            return
        await error_response_for(scope, refusal)(scope, receive, send)

    def check(self, scope: Scope) -> ReelserveError | None:
        """The refusal of a request, or None when it may pass."""
        if scope.get("path") in _UNGUARDED_PATHS:
            return None
        host = _header(scope, b"host") or ""
        if not self.any_host and _host_name(host) not in self.hosts:
            return ReelserveError(
                "invalidHost", f"this server has no API keys and answers only its own names, "
                f"not Host {host[:80]!r} (a DNS-rebinding page would send that); add the name "
                "to REELSERVE_ALLOWED_HOSTS or set REELSERVE_API_KEYS", parameter="Host",
                kind=ErrorKind.FORBIDDEN)
        websocket = scope["type"] == "websocket"
        if not websocket and scope.get("method") not in _WRITE_METHODS:
            return None
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_allowed(origin, host):
            return ReelserveError(
                "forbiddenOrigin", f"requests from the web page origin {origin[:80]!r} are "
                "refused by a server without API keys; add it to REELSERVE_ALLOWED_ORIGINS or "
                "set REELSERVE_API_KEYS", parameter="Origin", kind=ErrorKind.FORBIDDEN)
        if websocket:
            return None
        ctype = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if ctype and ctype not in _BODY_TYPES and not ctype.endswith("+json"):

            return ReelserveError(
                UNSUPPORTED_MEDIA_CODE, f"Content-Type {ctype[:60]!r} is not accepted; send "
                "application/json (or a form where a route takes files)",
                parameter="Content-Type", allowed_values=sorted(_BODY_TYPES))
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        found = _origin_of(origin)
        if found in self.origins:
            return True
        # Same origin: the page was served by the very Host this request was sent to.
        parts = urlsplit(origin.strip())
        return parts.scheme in ("http", "https") and bool(host) and (
            (parts.netloc or "").lower() == host.strip().lower())
