"""Signed, expiring media URLs: ``{base}/media/{key}.{ext}?exp=<unix>&sig=<hmac>``.

The signature is an HMAC-SHA256 over the key and the expiry (see :mod:`reelserve.api.media`, which
serves them). Kept alone so the services and the media router both import it without a circle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from reelserve.api.parsing import ascii_int


class UrlSigner:
    """Makes and checks signed media URLs."""

    def __init__(self, secret: bytes, base_url: str) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")

    def _sig(self, key: str, exp: int) -> str:
        mac = hmac.new(self._secret, f"{key}\n{exp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")

    def url(self, key: str, extension: str, expires_at: float) -> str:
        """The signed URL of artifact ``key`` valid until ``expires_at`` (unix seconds)."""
        exp = int(expires_at)
        suffix = f".{extension.lstrip('.')}" if extension else ""
        return f"{self.base_url}/media/{key}{suffix}?exp={exp}&sig={self._sig(key, exp)}"

    def check(self, key: str, exp: str | None, sig: str | None) -> int:
        """HTTP status for a request: 200 valid, 404 bad signature, 410 expired."""
        # ASCII digits, bounded (a crafted exp of "²" or 5000 digits is simply not ours).
        expires = ascii_int(exp)
        if expires is None or not sig:
            return 404
        if not hmac.compare_digest(self._sig(key, expires).encode(), sig.encode("utf-8", "replace")):
            return 404
        if expires < time.time():
            return 410
        return 200
