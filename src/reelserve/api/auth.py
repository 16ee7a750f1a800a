"""API keys and job ownership.

Keys come from ``REELSERVE_API_KEYS``. A job's owner is a stable hash of the key that created it,
so jobs are never visible to other keys and keys are never stored. With no keys configured the
server serves loopback clients only, all as the owner ``"local"``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from reelserve.errors import AuthError

if TYPE_CHECKING:
    from reelserve.settings import Settings

LOCAL_OWNER = "local"


def owner_for_key(api_key: str) -> str:
    """The owner id of an API key: a stable, non-reversible hash."""
    return "k_" + hashlib.sha256(b"reelserve-owner:" + api_key.encode()).hexdigest()[:32]


def is_loopback(host: str | None) -> bool:
    """Whether a client address is loopback (``testclient`` counts, for in-process tests)."""
    if host is None:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


_FORWARD_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")


def _in_networks(host: str, networks: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    for net in networks:
        try:
            if address in ipaddress.ip_network(net.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _forwarded_chain(name: bytes, value: str) -> list[str]:
    """The client addresses a forwarding header lists, nearest client first."""
    if name == b"forwarded":  # RFC 7239: for=1.2.3.4;proto=https, for="[::1]:80"
        out = []
        for element in value.split(","):
            for pair in element.split(";"):
                key, _, raw = pair.strip().partition("=")
                if key.strip().lower() == "for":
                    addr = raw.strip().strip('"')
                    if addr.startswith("["):
                        addr = addr[1:].split("]", 1)[0]
                    elif addr.count(":") == 1:
                        addr = addr.split(":", 1)[0]
                    out.append(addr)
        return out
    return [part.strip() for part in value.split(",") if part.strip()]


def client_address(settings: Settings, scope: Mapping[str, Any]) -> str | None:
    """The address of the client of an HTTP/WebSocket ``scope`` for authorization decisions.

    The TCP peer, unless it is one of ``REELSERVE_TRUSTED_PROXIES`` (addresses or CIDRs; none by
    default): then the nearest untrusted address its ``Forwarded`` / ``X-Forwarded-For`` /
    ``X-Real-IP`` header names. A request from an untrusted peer that carries such a header
    answers None (unknown, so never loopback): a same-host proxy makes every client's peer
    127.0.0.1, and its header is the one sign that the client is elsewhere.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else None
    headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or ()
               if k in _FORWARD_HEADERS}
    if not headers:
        return peer
    proxies = settings.trusted_proxies
    if peer is None or not _in_networks(peer, proxies):
        return None
    for name in _FORWARD_HEADERS:
        if name not in headers:
            continue
        chain = _forwarded_chain(name, headers[name])
        # Walk from the proxy towards the client: the first hop no trusted proxy vouches for.
        for hop in reversed(chain):
            if not _in_networks(hop, proxies):
                return hop
        return chain[0] if chain else None
    return peer


def authenticate(settings: Settings, api_key: str | None, client_host: str | None) -> str:
    """Return the owner for a request, or raise ``invalidApiKey`` (401).

    With keys configured, ``api_key`` must be one of them (compared in constant time). With none,
    only loopback clients are accepted and any key they send is ignored.
    """
    if not settings.api_keys:
        if is_loopback(client_host):
            return LOCAL_OWNER
        raise AuthError(
            "invalidApiKey",
            f"this server has no API keys configured and serves loopback clients only; client "
            f"{client_host!r} is not loopback (set REELSERVE_API_KEYS to serve remote clients)",
            parameter="apiKey",
        )
    if not api_key:
        raise AuthError(
            "invalidApiKey",
            "missing API key: send 'Authorization: Bearer <key>' or an authentication task "
            "{\"taskType\":\"authentication\",\"apiKey\":...} as the first array element",
            parameter="apiKey",
        )
    for key in settings.api_keys:
        if hmac.compare_digest(key.get_secret_value().encode(), api_key.encode()):
            return owner_for_key(api_key)
    raise AuthError("invalidApiKey", "the API key is not valid for this server",
                    parameter="apiKey")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (or a bare key)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return token.strip() or None
    return authorization.strip() or None
