"""The one outbound HTTP path of reelserve (SSRF rules).

Every connection reelserve opens on a client's behalf goes through this package: input fetches
(``inputs.frameImages`` given as URLs), webhook POSTs, ``uploadEndpoint`` PUTs and Kling callbacks.
A server that fetches and calls URLs for its clients is a classic way into a private network, so
the rules are strict by default:

* only ``http`` and ``https``; no credentials in the URL; no backslashes, spaces or control chars;
* IP literals must be written canonically (``a.b.c.d`` or ``[v6]``). Odd forms that some parsers
  read as IPv4 (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are decoded the way a
  browser would and refused: as ``blockedAddress`` when they name a blocked address, otherwise as
  ``invalidURL``;
* a host name is resolved **once** per hop; every address it resolves to must be allowed (one bad
  address refuses the URL), and the socket is opened to a vetted address while the URL keeps the
  name, so the ``Host`` header, TLS SNI and certificate check use the name and a second DNS answer
  (rebinding) never matters;
* refused by default: loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10), multicast,
  unspecified, reserved/documentation/benchmark ranges, cloud metadata endpoints, and IPv6 forms that
  embed IPv4 (mapped, compatible, 6to4, NAT64, Teredo) when the embedded address is refused;
* redirects are followed by httpx, at most ``max_redirects``; each hop passes through the vetting
  transport, so it is vetted and pinned like the first;
* connect, read and total timeouts; bodies are streamed and reading stops at a byte cap.

``REELSERVE_OUTBOUND_ALLOW`` (comma separated) lists host names, IP addresses or CIDRs an operator
trusts; they bypass the address rules (tests allow ``127.0.0.1``). Cloud metadata addresses stay
refused unless listed as exact addresses.

The parts: :mod:`.policy` (address rules), :mod:`.urls` (URL grammar, :func:`check_url`),
:mod:`.transport` (the vetting ``httpx`` transport; imported lazily, since importing reelserve
must not import httpx) and :mod:`.exchange` (:func:`fetch` / :func:`request`: caps, time budget,
error codes). The functions are synchronous (they block on the network); async code calls
:func:`afetch` / :func:`arequest`, which run them in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

from reelserve.media.netguard.exchange import (
    FetchResult,
    OutboundResponse,
    afetch,
    arequest,
    fetch,
    request,
)
from reelserve.media.netguard.policy import OutboundPolicy
from reelserve.media.netguard.urls import (
    BLOCKED_ADDRESS,
    FETCH_FAILED,
    FETCH_TIMEOUT,
    INVALID_URL,
    MEDIA_TOO_LARGE,
    TOO_MANY_REDIRECTS,
    check_url,
    redact,
)

__all__ = [
    "BLOCKED_ADDRESS",
    "FETCH_FAILED",
    "FETCH_TIMEOUT",
    "INVALID_URL",
    "MEDIA_TOO_LARGE",
    "TOO_MANY_REDIRECTS",
    "FetchResult",
    "OutboundPolicy",
    "OutboundResponse",
    "afetch",
    "arequest",
    "check_url",
    "fetch",
    "redact",
    "request",
]
