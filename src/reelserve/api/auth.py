"""API keys and job ownership.

Keys come from ``REELSERVE_API_KEYS``. A job's owner is a stable hash of the key that created it,
so jobs are never visible to other keys and keys are never stored. With no keys configured the
server serves loopback clients only, all as the owner ``"local"``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING

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
