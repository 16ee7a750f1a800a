"""The vetting httpx transport: every hop is resolved once, vetted, and pinned to a vetted address.

httpx stacks ``Client`` (redirects, cookies, timeouts) on a ``BaseTransport`` (one request, one
response). :class:`GuardTransport` sits at that seam, so every request the client sends, the first
one and each redirect hop httpx follows, passes through it:

1. the URL is vetted by :func:`~reelserve.media.netguard.urls.vet` (grammar, then the host is
   resolved **once** and every address checked against the policy);
2. the vetted addresses are *pinned* for that ``(host, port)``;
3. the request goes on to httpx's own ``HTTPTransport``, whose httpcore connection pool opens its
   sockets through :class:`_PinningBackend`: ``connect_tcp(host, port)`` connects to the pinned
   addresses only and refuses a host that was never vetted.

Because the request URL keeps the host name, everything above the socket treats the name as the
peer: the ``Host`` header, TLS SNI, certificate verification and the pool's connection reuse (a
connection made for ``a.example`` is never reused for ``b.example`` on the same IP). A second DNS
answer (rebinding) cannot matter: the name is never resolved again for that hop.

This module imports httpx and httpcore, so it is imported lazily by the public functions.
"""

from __future__ import annotations

import functools
import http.cookiejar
import ipaddress
import ssl
import time
import typing
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from reelserve.errors import ErrorKind
from reelserve.media.netguard.policy import OutboundPolicy
from reelserve.media.netguard.urls import (
    FETCH_TIMEOUT,
    INVALID_URL,
    Target,
    refusal,
    vet,
)

__all__ = ["GuardTransport", "guarded_client"]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# (host as httpcore passes it to connect_tcp, port) -> vetted addresses, in order.
Pins = dict[tuple[str, int], tuple[str, ...]]


class _PinningBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only to addresses the guard pinned."""

    def __init__(self, pins: Pins) -> None:
        self._pins = pins
        self._net = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._pins.get((host, port))
        if not addresses:
            # Only reachable if something sent a request around GuardTransport: fail closed.
            raise httpcore.ConnectError(f"{host}:{port} was not vetted; no connection made")
        last: httpcore.ConnectError | None = None
        for ip in addresses:
            try:
                return self._net.connect_tcp(
                    ip,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc  # refused or unreachable: try the next vetted address
        assert last is not None
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("outbound requests never use unix sockets")

    def sleep(self, seconds: float) -> None:
        self._net.sleep(seconds)


class _PinnedHTTPTransport(httpx.HTTPTransport):
    """httpx's own transport, with a connection pool whose sockets go through the pins."""

    def __init__(self, *, verify: ssl.SSLContext, pins: Pins) -> None:
        # trust_env=False: no proxy or netrc from the environment (a proxy would resolve the
        # name itself and defeat the pinning).
        super().__init__(verify=verify, trust_env=False)
        # HTTPTransport has no network_backend argument, but its handle_request only talks to
        # ``self._pool``: replace the pool it built (unused, holds nothing) with a pinning one.
        self._pool = httpcore.ConnectionPool(
            ssl_context=verify, network_backend=_PinningBackend(pins)
        )


@functools.lru_cache(maxsize=8)
def _ssl_context(verify: str | bool) -> ssl.SSLContext:
    """One SSL context per verify setting: building one loads the CA bundle (tens of ms)."""
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def _same_host(target: Target, raw_host: str) -> bool:
    """Whether our URL grammar and httpx's parser read the same host from the URL."""
    if target.is_ip_literal:
        try:
            return ipaddress.ip_address(raw_host) == ipaddress.ip_address(target.host)
        except ValueError:
            return False
    return raw_host.lower() == target.host


class GuardTransport(httpx.BaseTransport):
    """Vets and pins every request under an :class:`OutboundPolicy`, then sends it.

    Args:
        policy: the address rules, resolver and TLS verification to apply.
        deadline: a :func:`time.monotonic` instant after which no hop starts; each hop's
            timeouts are cut to the time left (the policy's total timeout over all redirects).
        inner: where vetted requests go. Default: httpx's ``HTTPTransport`` connecting only to
            the pinned addresses. Tests pass ``httpx.MockTransport`` to drive the logic above
            the socket (redirects, caps, error mapping) with every hop still vetted.

    Raises (from ``handle_request``): :class:`~reelserve.errors.OutboundBlockedError` for a
    refused URL or address, before any connection is made.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        deadline: float | None = None,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self._pins: Pins = {}
        if inner is None:
            verify = policy.verify
            ctx = verify if isinstance(verify, ssl.SSLContext) else _ssl_context(verify)
            inner = _PinnedHTTPTransport(verify=ctx, pins=self._pins)
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Vet ``request.url`` (resolving once), pin its addresses, send it, drop redirect bodies."""
        url = str(request.url)
        target = vet(url, self.policy)
        raw_host = request.url.raw_host.decode("ascii")
        if not _same_host(target, raw_host):
            raise refusal(INVALID_URL, url, f"host {raw_host!r} is ambiguous; refusing")
        # Keyed by the host string httpcore will hand to connect_tcp. Every value ever stored
        # here was vetted, so a concurrent request overwriting it is harmless.
        self._pins[(raw_host, target.port)] = target.addresses
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise refusal(
                    FETCH_TIMEOUT,
                    url,
                    f"timed out (total {self.policy.total_timeout}s)",
                    kind=ErrorKind.TIMEOUT,
                )
            request.extensions = {
                **request.extensions,
                "timeout": _clip(request.extensions.get("timeout", {}), left),
            }
        response = self._inner.handle_request(request)
        if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
            # httpx reads a redirect's body into memory before following it; a hostile server
            # could make that body huge. Nobody needs it: close (drop the connection), send none.
            response.close()
            headers = [
                (k, v)
                for k, v in response.headers.multi_items()
                if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
            ]
            return httpx.Response(
                response.status_code, headers=headers, extensions=response.extensions
            )
        return response

    def close(self) -> None:
        """Close the inner transport (and its connection pool)."""
        self._inner.close()


def _clip(timeouts: dict[str, Any], left: float) -> dict[str, Any]:
    """Cut each of httpcore's per-phase timeouts to the ``left`` seconds of the total budget."""
    out = dict(timeouts)
    for phase in ("connect", "read", "write", "pool"):
        value = out.get(phase)
        out[phase] = max(0.01, left if value is None else min(value, left))
    return out


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Keep no cookies: each outbound exchange is stateless, redirects included."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _location_hook(policy: OutboundPolicy) -> typing.Callable[[httpx.Response], None]:
    """A response hook that refuses a redirect's ``Location`` under our URL grammar first.

    The hop itself is vetted again (with DNS) by :class:`GuardTransport`; this only makes sure
    a refused form (``http://0177.0.0.1/``, which httpx's parser rejects on its own) is reported
    as ``blockedAddress``/``invalidURL`` rather than as a protocol error.
    """

    def hook(response: httpx.Response) -> None:
        if response.status_code not in _REDIRECT_STATUSES:
            return
        location = response.headers.get("location")
        if not location:
            return
        try:
            next_url = urljoin(str(response.request.url), location)
        except ValueError:
            raise refusal(INVALID_URL, location, "the redirect Location is not a URL") from None
        vet(next_url, policy, resolve=False)

    return hook


def guarded_client(
    policy: OutboundPolicy,
    *,
    deadline: float | None = None,
    follow_redirects: bool = False,
    inner: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` whose every request, redirect hops included, goes through the guard.

    Timeouts and the redirect limit come from ``policy``; cookies are never kept; the
    environment (proxies, netrc) is ignored. Arguments as for :class:`GuardTransport`.
    """
    timeout = httpx.Timeout(
        connect=policy.connect_timeout,
        read=policy.read_timeout,
        write=policy.read_timeout,
        pool=policy.connect_timeout,
    )
    hooks: dict[str, list[typing.Callable[..., Any]]] = (
        {"response": [_location_hook(policy)]} if follow_redirects else {}
    )
    return httpx.Client(
        transport=GuardTransport(policy, deadline=deadline, inner=inner),
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=policy.max_redirects,
        # No proxies from the environment: httpx would mount its own transports for them,
        # beside (not through) the guard.
        trust_env=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        event_hooks=hooks,
    )
