"""Webhook POSTs: Standard Webhooks signing, verification and one delivery attempt.

Every webhook and status-callback POST is signed by the Standard Webhooks convention
(https://www.standardwebhooks.com, see ``docs/delivery.md``), so receivers verify it with any
Standard Webhooks library:

* ``webhook-id``: a stable id per delivery (task and result, or task and status), the same on
  every retry, so a receiver can drop a duplicate that arrives after a crash between its 2xx and
  our record of it;
* ``webhook-timestamp``: unix seconds when this attempt was signed;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>``;
* ``X-Reelserve-Attempt``: 1, 2, ... (informational, not signed).

The key is the ``whsec_...`` secret: ``REELSERVE_WEBHOOK_SECRET``, else one generated at first
start and kept in ``<data_dir>/webhook_secret`` (:func:`resolve_secret`; ``reelserve
webhook-secret`` prints it). Signing goes through the ``standardwebhooks`` library itself, so what
we send is what its verifiers check.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from standardwebhooks import Webhook

from reelserve.errors import ReelserveError
from reelserve.media import netguard

if TYPE_CHECKING:
    from reelserve.settings import Settings

__all__ = [
    "ATTEMPT_HEADER",
    "DELIVERY_HEADER",
    "SECRET_FILE",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Attempt",
    "post",
    "resolve_secret",
    "sign",
    "signed_headers",
    "standard_secret",
    "verify",
]

DELIVERY_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
ATTEMPT_HEADER = "X-Reelserve-Attempt"
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook_secret"
"""The file in ``data_dir`` that keeps the generated secret."""

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


# ------------------------------------------------------------------ the secret


def standard_secret(secret: str | bytes) -> str:
    """``secret`` in the Standard Webhooks form receivers configure: ``whsec_<base64 key>``.

    A ``whsec_`` secret is that already; any other value (an operator's own
    ``REELSERVE_WEBHOOK_SECRET``) is used as the key's bytes (UTF-8), which this form encodes.
    """
    if isinstance(secret, str):
        if secret.startswith(SECRET_PREFIX):
            return secret
        secret = secret.encode()
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def _signer(secret: str | bytes) -> Webhook:
    return Webhook(standard_secret(secret))


def resolve_secret(settings: Settings) -> str:
    """The webhook signing secret, ``whsec_...``: ``settings.webhook_secret`` when set, else the
    one kept in ``<data_dir>/webhook_secret``, generated (32 random bytes) on first use.

    Webhooks are thus always signed. Processes sharing the data dir share the file; machines
    with separate data dirs must set ``REELSERVE_WEBHOOK_SECRET`` to one value.
    """
    if settings.webhook_secret is not None:
        return standard_secret(settings.webhook_secret.get_secret_value())
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRET_FILE}.{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(standard_secret(secrets.token_bytes(32)) + "\n")
        try:
            # A link never replaces: of several processes starting together, the first one's
            # secret wins and the others read it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
    return standard_secret(path.read_text().strip())


# ------------------------------------------------------------------ signing and verifying


def sign(secret: str | bytes, delivery_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for ``body`` of delivery ``delivery_id`` sent at
    ``timestamp``: ``v1,<base64>`` (computed by the ``standardwebhooks`` library)."""
    at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    return _signer(secret).sign(delivery_id, at, body.decode("utf-8"))


def verify(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a received webhook is authentic and fresh (receiver side).

    The same check as ``standardwebhooks.Webhook(secret).verify(body, headers)``, with the
    replay window and the clock as arguments.

    Args:
        secret: the ``whsec_...`` secret (or the operator's own ``REELSERVE_WEBHOOK_SECRET``).
        body: the raw request body, byte for byte (do not re-serialize the JSON).
        headers: the request headers (looked up case-insensitively).
        tolerance: maximum age of the timestamp in seconds (replay window).
        now: the receiver's clock (default ``time.time()``).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    delivery_id = lower.get(DELIVERY_HEADER, "")
    ts_text = lower.get(TIMESTAMP_HEADER, "")
    given = lower.get(SIGNATURE_HEADER, "")
    if not delivery_id or not ts_text.isdigit() or not given:
        return False
    ts = int(ts_text)
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    try:
        expected = sign(secret, delivery_id, ts, body)
    except UnicodeDecodeError:
        return False
    # Several space-separated signatures are allowed (key rotation): any v1 match counts.
    return any(hmac.compare_digest(expected, candidate) for candidate in given.split())


def signed_headers(
    body: bytes, *, secret: str | None, delivery_id: str, attempt: int, now: float | None = None
) -> dict[str, str]:
    """Headers for one webhook POST (the signature only with a ``secret``; the dispatcher always
    has one, see :func:`resolve_secret`)."""
    ts = int(time.time() if now is None else now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "reelserve-webhook",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(ts),
        ATTEMPT_HEADER: str(attempt),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, delivery_id, ts, body)
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
