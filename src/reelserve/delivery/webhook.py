"""Webhook POSTs: signing, verification and one delivery attempt.

Every webhook POST carries (see ``docs/delivery.md``):

* ``X-Reelserve-Delivery``: a stable id per (task, result) — the same on every retry, so a
  receiver can drop a duplicate that arrives after a crash between its 2xx and our record of it;
* ``X-Reelserve-Attempt``: 1, 2, ...;
* ``X-Reelserve-Timestamp``: unix seconds when this attempt was signed;
* ``X-Reelserve-Signature``: ``v1=<hex HMAC-SHA256(webhook_secret, timestamp + "." + body)>``,
  only when ``REELSERVE_WEBHOOK_SECRET`` is set.

Receivers verify with :func:`verify` (or its ten lines in any language): recompute the HMAC over
the exact raw body, compare in constant time, and refuse timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from reelserve.errors import ReelserveError
from reelserve.media import netguard

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Attempt",
    "post",
    "sign",
    "signed_headers",
    "verify",
]

SIGNATURE_HEADER = "X-Reelserve-Signature"
TIMESTAMP_HEADER = "X-Reelserve-Timestamp"
DELIVERY_HEADER = "X-Reelserve-Delivery"
ATTEMPT_HEADER = "X-Reelserve-Attempt"
SIGNATURE_VERSION = "v1"

# Error codes of netguard that no retry can fix.
PERMANENT_CODES = frozenset({netguard.INVALID_URL, netguard.BLOCKED_ADDRESS})


@dataclass(frozen=True)
class Attempt:
    """The outcome of one outbound delivery attempt.

    ``ok``: the receiver answered 2xx. ``permanent``: retrying cannot help (the URL is refused).
    """

    ok: bool
    status: int | None
    error: str | None
    elapsed_ms: int
    permanent: bool = False


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``: ``v1=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, str(int(timestamp)).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={mac}"


def verify(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic and fresh (receiver side).

    Args:
        secret: the shared ``REELSERVE_WEBHOOK_SECRET``.
        body: the raw request body, byte for byte (do not re-serialize the JSON).
        headers: the request headers (looked up case-insensitively).
        tolerance: maximum age of the timestamp in seconds (replay window).
        now: the receiver's clock (default ``time.time()``).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ts_text = lower.get(TIMESTAMP_HEADER.lower(), "")
    given = lower.get(SIGNATURE_HEADER.lower(), "")
    if not ts_text.isdigit() or not given:
        return False
    ts = int(ts_text)
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), given)


def signed_headers(
    body: bytes, *, secret: str | None, delivery_id: str, attempt: int, now: float | None = None
) -> dict[str, str]:
    """Headers for one webhook POST (signature only when a secret is configured)."""
    ts = int(time.time() if now is None else now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "reelserve-webhook",
        DELIVERY_HEADER: delivery_id,
        ATTEMPT_HEADER: str(attempt),
        TIMESTAMP_HEADER: str(ts),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, ts, body)
    return headers


def send(
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    policy: netguard.OutboundPolicy,
    parameter: str,
) -> Attempt:
    """One attempt through the netguard; never raises for network trouble (it is the outcome)."""
    started = time.monotonic()
    try:
        resp = netguard.request(
            method,
            url,
            policy=policy,
            content=body,
            headers=headers,
            max_bytes=4096,
            parameter=parameter,
        )
    except ReelserveError as exc:
        return Attempt(
            ok=False,
            status=None,
            error=f"{exc.code}: {exc.message}",
            elapsed_ms=int((time.monotonic() - started) * 1000),
            permanent=exc.code in PERMANENT_CODES,
        )
    elapsed = int((time.monotonic() - started) * 1000)
    if resp.ok:
        return Attempt(ok=True, status=resp.status, error=None, elapsed_ms=elapsed)
    snippet = resp.body[:200].decode("utf-8", "replace")
    return Attempt(
        ok=False, status=resp.status, error=f"HTTP {resp.status}: {snippet}", elapsed_ms=elapsed
    )


def post(
    url: str,
    body: bytes,
    *,
    policy: netguard.OutboundPolicy,
    secret: str | None,
    delivery_id: str,
    attempt: int,
) -> Attempt:
    """POST a signed webhook body once."""
    headers = signed_headers(body, secret=secret, delivery_id=delivery_id, attempt=attempt)
    return send("POST", url, body, headers, policy=policy, parameter="webhookURL")
