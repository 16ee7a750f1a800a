"""The calls the rest of reelserve makes: :func:`fetch` a resource, send one :func:`request`.

Each call vets the URL's grammar first (exact errors, no DNS), then sends it through an
``httpx.Client`` built on :class:`~reelserve.media.netguard.transport.GuardTransport`: httpx
follows redirects, and each hop is vetted and pinned by the transport. What stays here is what the
callers are promised beyond "where": a byte cap enforced while streaming, a total time budget, and
httpx's errors mapped to :class:`~reelserve.errors.OutboundBlockedError` codes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reelserve.errors import ErrorKind, OutboundBlockedError
from reelserve.media.netguard.policy import OutboundPolicy
from reelserve.media.netguard.urls import (
    FETCH_FAILED,
    FETCH_TIMEOUT,
    INVALID_URL,
    MEDIA_TOO_LARGE,
    TOO_MANY_REDIRECTS,
    redact,
    refusal,
    vet,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["FetchResult", "OutboundResponse", "afetch", "arequest", "fetch", "request"]

_MiB = 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchResult:
    """A fetched resource (2xx, body at most ``max_bytes``)."""

    content: bytes
    content_type: str | None
    final_url: str
    status: int = 200


@dataclass(frozen=True)
class OutboundResponse:
    """The answer to :func:`request` (any status; the body is cut at ``max_bytes``)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


@dataclass
class _Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    truncated: bool


def _read_capped(chunks: Iterator[bytes], cap: int, deadline: float) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes before ``deadline``; returns (body, exceeded)."""
    buf = bytearray()
    for chunk in chunks:
        if len(buf) + len(chunk) > cap:
            buf += chunk[: cap - len(buf)]
            return bytes(buf), True
        buf += chunk
        if time.monotonic() >= deadline:
            raise TimeoutError("total timeout")
    return bytes(buf), False


def _hop_url(exc: Exception, default: str) -> str:
    """The URL of the hop an httpx error happened on (the first URL when unknown)."""
    try:
        return str(exc.request.url)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return default


def _exchange(
    url: str,
    method: str,
    *,
    policy: OutboundPolicy,
    content: bytes | None,
    headers: Mapping[str, str] | None,
    max_bytes: int,
    follow_redirects: bool,
    over_cap_is_error: bool,
    parameter: str | None,
    transport: httpx.BaseTransport | None,
) -> _Exchange:
    # Grammar and IP literals first, with the caller's URL in the error; DNS happens once per
    # hop, in the transport. The normalised URL is what httpx is given, so both parsers agree.
    first = vet(url, policy, parameter, resolve=False).url
    import httpx  # lazy: importing reelserve must stay cheap

    from reelserve.media.netguard.transport import guarded_client

    deadline = time.monotonic() + policy.total_timeout
    hdrs = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    # Decoded bytes are what we count; asking for identity keeps a small gzip body from
    # expanding into a huge one inside a single chunk.
    if not any(k.lower() == "accept-encoding" for k in hdrs):
        hdrs["Accept-Encoding"] = "identity"
    try:
        with guarded_client(
            policy, deadline=deadline, follow_redirects=follow_redirects, inner=transport
        ) as client:
            req = client.build_request(method.upper(), first, content=content, headers=hdrs)
            resp = client.send(req, stream=True)
            try:
                hop = str(resp.url)
                declared = resp.headers.get("content-length")
                if (
                    over_cap_is_error
                    and declared is not None
                    and declared.isdigit()
                    and int(declared) > max_bytes
                ):
                    raise refusal(
                        MEDIA_TOO_LARGE,
                        hop,
                        f"the response is {int(declared)} bytes; at most {max_bytes} are allowed",
                        parameter,
                        kind=ErrorKind.TOO_LARGE,
                    )
                body, exceeded = _read_capped(resp.iter_bytes(), max_bytes, deadline)
                if exceeded and over_cap_is_error:
                    raise refusal(
                        MEDIA_TOO_LARGE,
                        hop,
                        f"the response exceeds {max_bytes} bytes; reading stopped at the cap",
                        parameter,
                        kind=ErrorKind.TOO_LARGE,
                    )
                return _Exchange(
                    status=resp.status_code,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                    body=body,
                    url=hop,
                    truncated=exceeded,
                )
            finally:
                # Closing an unread stream drops the connection instead of draining it.
                resp.close()
    except OutboundBlockedError as exc:
        # Refusals raised inside the transport (a redirect hop) do not know the field name.
        if exc.parameter is None:
            exc.parameter = parameter
        raise
    except httpx.TooManyRedirects as exc:
        raise refusal(
            TOO_MANY_REDIRECTS,
            url,
            f"more than {policy.max_redirects} redirects (last to {redact(_hop_url(exc, url))})",
            parameter,
        ) from None
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise refusal(
            FETCH_TIMEOUT,
            _hop_url(exc, url),
            f"timed out ({type(exc).__name__}; connect {policy.connect_timeout}s, "
            f"read {policy.read_timeout}s, total {policy.total_timeout}s)",
            parameter,
            kind=ErrorKind.TIMEOUT,
        ) from None
    except httpx.ConnectError as exc:
        raise refusal(
            FETCH_FAILED,
            _hop_url(exc, url),
            f"cannot connect ({type(exc).__name__}: {exc})",
            parameter,
        ) from None
    except httpx.HTTPError as exc:
        raise refusal(
            FETCH_FAILED,
            _hop_url(exc, url),
            f"request failed ({type(exc).__name__}: {exc})",
            parameter,
        ) from None
    except httpx.InvalidURL as exc:
        raise refusal(INVALID_URL, url, f"not a valid URL ({exc})", parameter) from None


def fetch(
    url: str,
    *,
    max_bytes: int,
    policy: OutboundPolicy,
    parameter: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> FetchResult:
    """GET ``url`` under the SSRF rules and return its body (at most ``max_bytes``).

    Redirects are followed (each hop vetted). A non-2xx answer raises ``fetchFailed``; a body over
    the cap raises ``mediaTooLarge`` (kind TOO_LARGE) as soon as the cap is passed, without
    reading the rest. ``parameter`` names the request field in errors (e.g. ``inputs.video``).
    ``transport`` replaces the socket layer under the guard (tests: ``httpx.MockTransport``);
    every hop is still vetted. Blocks: call it from a thread, or use :func:`afetch`.
    """
    ex = _exchange(
        url,
        "GET",
        policy=policy,
        content=None,
        headers=None,
        max_bytes=max_bytes,
        follow_redirects=True,
        over_cap_is_error=True,
        parameter=parameter,
        transport=transport,
    )
    if ex.status in _REDIRECT_STATUSES:
        raise refusal(FETCH_FAILED, ex.url, f"redirect ({ex.status}) without a Location", parameter)
    if not 200 <= ex.status < 300:
        raise refusal(FETCH_FAILED, ex.url, f"the server answered HTTP {ex.status}", parameter)
    ctype = ex.headers.get("content-type")
    return FetchResult(
        content=ex.body,
        content_type=ctype.split(";", 1)[0].strip().lower() if ctype else None,
        final_url=ex.url,
        status=ex.status,
    )


def request(
    method: str,
    url: str,
    *,
    policy: OutboundPolicy,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = _MiB,
    follow_redirects: bool = False,
    parameter: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> OutboundResponse:
    """Send one request (webhook POST, upload PUT, callback) under the SSRF rules.

    Any HTTP status is returned, not raised: the caller decides what to retry. The response body is
    cut at ``max_bytes`` (``truncated`` tells), since a receiver's chatter never matters. Redirects
    are not followed unless asked (a webhook that redirects is usually misconfigured); a redirect's
    body is never read. ``transport`` as for :func:`fetch`.
    Raises :class:`~reelserve.errors.OutboundBlockedError` for refused URLs, connection failures
    (``fetchFailed``) and timeouts (``fetchTimeout``). Blocks: use :func:`arequest` from async code.
    """
    ex = _exchange(
        url,
        method,
        policy=policy,
        content=content,
        headers=headers,
        max_bytes=max_bytes,
        follow_redirects=follow_redirects,
        over_cap_is_error=False,
        parameter=parameter,
        transport=transport,
    )
    return OutboundResponse(
        status=ex.status, headers=ex.headers, body=ex.body, url=ex.url, truncated=ex.truncated
    )


async def afetch(
    url: str, *, max_bytes: int, policy: OutboundPolicy, parameter: str | None = None
) -> FetchResult:
    """:func:`fetch` in a worker thread, for async callers."""
    return await asyncio.to_thread(
        fetch, url, max_bytes=max_bytes, policy=policy, parameter=parameter
    )


async def arequest(
    method: str,
    url: str,
    *,
    policy: OutboundPolicy,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = _MiB,
    follow_redirects: bool = False,
    parameter: str | None = None,
) -> OutboundResponse:
    """:func:`request` in a worker thread, for async callers."""
    return await asyncio.to_thread(
        request,
        method,
        url,
        policy=policy,
        content=content,
        headers=headers,
        max_bytes=max_bytes,
        follow_redirects=follow_redirects,
        parameter=parameter,
    )
