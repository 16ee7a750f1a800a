"""The one outbound HTTP path of reelserve (SSRF rules).

Every connection reelserve opens on a client's behalf goes through this module: input fetches
(``inputs.frameImages`` given as URLs), webhook POSTs, ``uploadEndpoint`` PUTs and Kling callbacks.
A server that fetches and calls URLs for its clients is a classic way into a private network, so
the rules are strict by default:

* only ``http`` and ``https``; no credentials in the URL; no backslashes, spaces or control chars;
* IP literals must be written canonically (``a.b.c.d`` or ``[v6]``). Odd forms that some parsers
  read as IPv4 (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are decoded the way a
  browser would and refused: as ``blockedAddress`` when they name a blocked address, otherwise as
  ``invalidURL``;
* a host name is resolved **once**; every address it resolves to must be allowed (one bad address
  refuses the URL), and the connection goes to a vetted address: the request URL is rewritten to the
  IP while the ``Host`` header and the TLS SNI/certificate check keep the original name (httpcore's
  ``sni_hostname`` extension), so a second DNS answer (rebinding) never matters;
* refused by default: loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10), multicast,
  unspecified, reserved/documentation/benchmark ranges, cloud metadata endpoints, and IPv6 forms that
  embed IPv4 (mapped, compatible, 6to4, NAT64, Teredo) when the embedded address is refused;
* redirects are followed by hand, each hop vetted again, at most ``max_redirects``;
* connect, read and total timeouts; bodies are streamed and reading stops at a byte cap.

``REELSERVE_OUTBOUND_ALLOW`` (comma separated) lists host names, IP addresses or CIDRs an operator
trusts; they bypass the address rules (tests allow ``127.0.0.1``). Cloud metadata addresses stay
refused unless listed as exact addresses.

The functions are synchronous (they block on the network); async code calls :func:`afetch` /
:func:`arequest`, which run them in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from reelserve.errors import ErrorKind, OutboundBlockedError

if TYPE_CHECKING:
    import httpx

    from reelserve.settings import Settings

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

# Error codes (all raised as OutboundBlockedError).
INVALID_URL = "invalidURL"
BLOCKED_ADDRESS = "blockedAddress"
FETCH_FAILED = "fetchFailed"
FETCH_TIMEOUT = "fetchTimeout"
TOO_MANY_REDIRECTS = "tooManyRedirects"
MEDIA_TOO_LARGE = "mediaTooLarge"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

_MiB = 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin.
_SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")
_NUMERIC_LABEL_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")

# Cloud metadata endpoints: refused even when a CIDR in the allow list covers them.
_METADATA: dict[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "AWS/GCP/Azure/OpenStack",
    ipaddress.ip_address("169.254.170.2"): "AWS ECS task",
    ipaddress.ip_address("169.254.169.253"): "AWS DNS",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud",
    ipaddress.ip_address("192.0.0.192"): "Oracle Cloud",
    ipaddress.ip_address("fd00:ec2::254"): "AWS IPv6",
    ipaddress.ip_address("fd00:ec2::23"): "AWS IPv6 DNS",
}

_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified/this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo"),
        ("2001:db8::/32", "documentation"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_V6_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_V6_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT
_V6_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V6_6TO4 = ipaddress.IPv6Network("2002::/16")


# --------------------------------------------------------------------------------------------
# Policy and results
# --------------------------------------------------------------------------------------------


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(sockaddr[0])
        if addr not in out:
            out.append(addr)
    return out


@dataclass(frozen=True)
class OutboundPolicy:
    """What the outbound path may reach, and how long it waits.

    Args:
        allow: host names, IP addresses or CIDRs that bypass the address rules
            (``REELSERVE_OUTBOUND_ALLOW``). A host name entry trusts whatever the name resolves to.
        connect_timeout: seconds to establish a TCP (and TLS) connection.
        read_timeout: seconds to wait for each chunk of the response.
        total_timeout: seconds for the whole exchange, redirects included (stops slow drips).
        max_redirects: redirects followed before ``tooManyRedirects``.
        resolver: ``(host, port) -> [ip, ...]``; default :func:`socket.getaddrinfo`. A seam for
            tests and for operators with their own resolver; it is called once per hop.
        verify: TLS verification (``True``, a CA bundle path, or an ``ssl.SSLContext``).
    """

    allow: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 300.0
    max_redirects: int = 5
    resolver: Resolver | None = None
    verify: ssl.SSLContext | str | bool = True
    _allow_hosts: frozenset[str] = field(init=False, repr=False, compare=False)
    _allow_nets: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)
    _allow_exact: frozenset[IPAddress] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        hosts: set[str] = set()
        nets: list[IPNetwork] = []
        exact: set[IPAddress] = set()
        for raw in self.allow:
            entry = raw.strip().lower()
            if not entry:
                continue
            bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
            try:
                if "/" in bare:
                    nets.append(ipaddress.ip_network(bare, strict=False))
                else:
                    addr = ipaddress.ip_address(bare)
                    exact.add(addr)
                    nets.append(ipaddress.ip_network(addr))
            except ValueError:
                if not _HOSTNAME_RE.match(bare):
                    raise ValueError(
                        f"outbound_allow entry {raw!r} is neither a host name, an IP address "
                        "nor a CIDR (e.g. 'media.internal', '10.1.2.3', '10.0.0.0/8')"
                    ) from None
                hosts.add(bare.rstrip("."))
        object.__setattr__(self, "_allow_hosts", frozenset(hosts))
        object.__setattr__(self, "_allow_nets", tuple(nets))
        object.__setattr__(self, "_allow_exact", frozenset(exact))

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        """The policy an install runs with (``REELSERVE_OUTBOUND_*`` settings)."""
        return cls(
            allow=tuple(settings.outbound_allow),
            connect_timeout=settings.outbound_connect_timeout,
            read_timeout=settings.outbound_read_timeout,
            total_timeout=settings.outbound_total_timeout,
            max_redirects=settings.outbound_max_redirects,
        )

    def host_allowed(self, host: str) -> bool:
        """Whether an operator listed this host name."""
        return host.rstrip(".").lower() in self._allow_hosts

    def address_refusal(self, addr: IPAddress) -> str | None:
        """Why ``addr`` is refused (``None`` when it may be reached)."""
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            # Judge mapped addresses by their IPv4 form so allow entries written as IPv4 apply.
            inner = self.address_refusal(addr.ipv4_mapped)
            return f"IPv4-mapped form of {addr.ipv4_mapped}, {inner}" if inner else None
        if addr in _METADATA:
            if addr in self._allow_exact:
                return None
            return f"cloud metadata endpoint ({_METADATA[addr]})"
        if any(addr in net for net in self._allow_nets):
            return None
        return _blocked_reason(addr)

    def resolve(self, host: str, port: int) -> list[str]:
        """Resolve a host name once (through :attr:`resolver` or the system resolver)."""
        return list((self.resolver or _system_resolver)(host, port))


def _blocked_reason(addr: IPAddress) -> str | None:
    if isinstance(addr, ipaddress.IPv4Address):
        for net, why in _V4_BLOCKED:
            if addr in net:
                return why
        if addr == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        return None if addr.is_global else "not globally routable"
    embedded: ipaddress.IPv4Address | None = None
    kind = ""
    if addr in _V6_MAPPED:
        embedded, kind = addr.ipv4_mapped, "IPv4-mapped"
    elif addr in _V6_TRANSLATED:
        embedded, kind = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "IPv4-translated"
    elif addr in _V6_NAT64:
        embedded, kind = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "NAT64"
    elif addr in _V6_6TO4:
        embedded, kind = addr.sixtofour, "6to4"
    if embedded is not None:
        inner = _blocked_reason(embedded)
        return f"{kind} form of {embedded} ({inner})" if inner else None
    for net6, why in _V6_BLOCKED:
        if addr in net6:
            return why
    return None if addr.is_global else "not globally routable"


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


# --------------------------------------------------------------------------------------------
# URL vetting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A vetted hop: where to connect and what to tell the server."""

    url: str  # the logical URL (host name kept)
    scheme: str
    host: str  # ASCII host name, or the canonical IP text
    port: int
    host_header: str
    path_query: str
    addresses: tuple[str, ...]  # vetted IPs to connect to, in order
    is_ip_literal: bool


def redact(url: str) -> str:
    """The URL without query, fragment and credentials: safe to put in errors and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return repr(url[:200])
    host = parts.netloc.rpartition("@")[2]
    shown = urlunsplit((parts.scheme, host, parts.path, "", ""))
    if parts.query:
        shown += "?…"
    return shown[:300]


def _err(code: str, url: str, why: str, parameter: str | None, **kw: Any) -> OutboundBlockedError:
    return OutboundBlockedError(code, f"{redact(url)}: {why}", parameter=parameter, **kw)


def _parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Decode a host the way the WHATWG URL parser does when its last label is numeric.

    Returns ``None`` when the host is not numeric at all (a DNS name); raises ``ValueError``
    when it looks numeric but is not a valid IPv4 address in any form.
    """
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels = labels[:-1]
    if not labels or not _NUMERIC_LABEL_RE.match(labels[-1]):
        return None
    if len(labels) > 4:
        raise ValueError("more than four numeric parts")
    numbers: list[int] = []
    for label in labels:
        if label.startswith("0x"):
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            numbers.append(int(label, 8))  # ValueError for 08/09
        elif label.isdigit():
            numbers.append(int(label))
        else:
            raise ValueError(f"part {label!r} is not a number")
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError("a part is out of range")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def _vet(
    url: str, policy: OutboundPolicy, parameter: str | None, *, resolve: bool = True
) -> _Target:
    """Check a URL against every rule; resolve its host once. Raises OutboundBlockedError."""
    if not isinstance(url, str) or not url:
        raise _err(INVALID_URL, str(url), "empty URL; give an absolute http(s) URL", parameter)
    if len(url) > 8192:
        raise _err(INVALID_URL, url, "URL longer than 8192 characters", parameter)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise _err(
            INVALID_URL, url, "URL contains whitespace, control characters or '\\'", parameter
        )
    try:
        parts = urlsplit(url)
        port_raw = parts.port
    except ValueError as exc:
        raise _err(INVALID_URL, url, f"not a valid URL ({exc})", parameter) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _err(
            INVALID_URL,
            url,
            f"scheme {parts.scheme or '(none)'!r} is not allowed",
            parameter,
            allowed_values=["http", "https"],
        )
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise _err(INVALID_URL, url, "credentials in the URL are not allowed", parameter)
    raw_host = parts.hostname or ""
    if not raw_host:
        raise _err(INVALID_URL, url, "the URL has no host", parameter)
    port = port_raw if port_raw is not None else (443 if scheme == "https" else 80)
    if port == 0:
        raise _err(INVALID_URL, url, "port 0 is not allowed", parameter)
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")

    literal: IPAddress | None = None
    if bracketed or ":" in raw_host:
        if "%" in raw_host:
            raise _err(INVALID_URL, url, "IPv6 zone identifiers are not allowed", parameter)
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise _err(
                INVALID_URL, url, f"{raw_host!r} is not an IPv6 address", parameter
            ) from None
        host = str(literal)
    else:
        try:
            host = raw_host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise _err(
                INVALID_URL, url, f"host {raw_host!r} is not a valid name", parameter
            ) from None
        try:
            loose = _parse_ipv4_loose(host)
        except ValueError as exc:
            raise _err(
                INVALID_URL,
                url,
                f"host {raw_host!r} is not a valid IPv4 address ({exc})",
                parameter,
            ) from None
        if loose is not None:
            if host != str(loose):
                reason = policy.address_refusal(loose)
                if reason:
                    raise _err(
                        BLOCKED_ADDRESS,
                        url,
                        f"host {raw_host!r} is an encoded form of {loose}, a {reason} address",
                        parameter,
                    )
                raise _err(
                    INVALID_URL,
                    url,
                    f"host {raw_host!r} is a non-canonical IPv4 literal; write it as {loose}",
                    parameter,
                )
            literal = loose
        elif not _HOSTNAME_RE.match(host):
            raise _err(INVALID_URL, url, f"host {raw_host!r} is not a valid name", parameter)

    host_for_header = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    default_port = 443 if scheme == "https" else 80
    host_header = host_for_header if port == default_port else f"{host_for_header}:{port}"
    path_query = parts.path or "/"
    if parts.query:
        path_query += "?" + parts.query
    logical = urlunsplit((scheme, host_header, parts.path or "/", parts.query, ""))

    if literal is not None:
        reason = policy.address_refusal(literal)
        if reason:
            raise _err(BLOCKED_ADDRESS, url, f"address {literal} is refused ({reason})", parameter)
        addr = literal.ipv4_mapped if isinstance(literal, ipaddress.IPv6Address) else None
        addresses: tuple[str, ...] = (str(addr or literal),)
    elif not resolve:
        addresses = ()
    else:
        host_trusted = policy.host_allowed(host)
        try:
            resolved = policy.resolve(host.rstrip("."), port)
        except (OSError, UnicodeError) as exc:
            raise _err(
                FETCH_FAILED, url, f"cannot resolve host {host!r} ({exc})", parameter
            ) from None
        if not resolved:
            raise _err(FETCH_FAILED, url, f"host {host!r} resolves to no address", parameter)
        vetted: list[str] = []
        for text in resolved:
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise _err(
                    FETCH_FAILED, url, f"resolver returned {text!r}, not an address", parameter
                ) from None
            reason = None if host_trusted else policy.address_refusal(ip)
            if reason:
                # One bad answer refuses the whole name: a name mixing public and internal
                # addresses is either misconfigured or an attack.
                raise _err(
                    BLOCKED_ADDRESS,
                    url,
                    f"host {host!r} resolves to {ip}, which is refused ({reason})",
                    parameter,
                )
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if str(ip) not in vetted:
                vetted.append(str(ip))
        addresses = tuple(vetted)
    return _Target(
        url=logical,
        scheme=scheme,
        host=host,
        port=port,
        host_header=host_header,
        path_query=path_query,
        addresses=addresses,
        is_ip_literal=literal is not None,
    )


def check_url(
    url: str, *, policy: OutboundPolicy, resolve: bool = False, parameter: str | None = None
) -> str:
    """Refuse a URL early (e.g. ``webhookURL`` at submit time) without connecting.

    With ``resolve=False`` only the syntax and IP literals are checked (no DNS, cheap enough for a
    request handler); the real call vets again, with DNS, when it connects. Returns the normalised
    URL. Raises :class:`~reelserve.errors.OutboundBlockedError`.
    """
    return _vet(url, policy, parameter, resolve=resolve).url


# --------------------------------------------------------------------------------------------
# The exchange
# --------------------------------------------------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0


@dataclass
class _Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    truncated: bool


def _ip_url(target: _Target, ip: str) -> str:
    netloc = f"[{ip}]:{target.port}" if ":" in ip else f"{ip}:{target.port}"
    return f"{target.scheme}://{netloc}{target.path_query}"


@functools.lru_cache(maxsize=8)
def _ssl_context(verify: str | bool) -> ssl.SSLContext:
    """One SSL context per verify setting: building one loads the CA bundle (tens of ms)."""
    import httpx

    return httpx.create_ssl_context(verify=verify, trust_env=False)


def _client(policy: OutboundPolicy, deadline: _Deadline) -> httpx.Client:
    import httpx  # lazy: importing reelserve must stay cheap

    read = max(0.01, min(policy.read_timeout, deadline.left()))
    timeout = httpx.Timeout(
        connect=max(0.01, min(policy.connect_timeout, deadline.left())),
        read=read,
        write=read,
        pool=policy.connect_timeout,
    )
    # trust_env=False: no proxies or netrc from the environment; a proxy would defeat the
    # address checks (it would resolve the name itself).
    verify = (
        policy.verify if isinstance(policy.verify, ssl.SSLContext) else _ssl_context(policy.verify)
    )
    return httpx.Client(timeout=timeout, verify=verify, trust_env=False, follow_redirects=False)


def _read_capped(chunks: Iterator[bytes], cap: int, deadline: _Deadline) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes; returns (body, exceeded)."""
    buf = bytearray()
    for chunk in chunks:
        if len(buf) + len(chunk) > cap:
            buf += chunk[: cap - len(buf)]
            return bytes(buf), True
        buf += chunk
        if deadline.expired():
            raise TimeoutError("total timeout")
    return bytes(buf), False


def _one_hop(
    target: _Target,
    method: str,
    content: bytes | None,
    headers: dict[str, str],
    policy: OutboundPolicy,
    deadline: _Deadline,
    max_bytes: int,
    over_cap_is_error: bool,
    parameter: str | None,
) -> _Exchange:
    import httpx

    hdrs = dict(headers)
    hdrs["Host"] = target.host_header
    extensions: dict[str, Any] = {}
    if target.scheme == "https" and not target.is_ip_literal:
        # Connect to the vetted IP, but present and verify the original name (SNI + cert).
        extensions["sni_hostname"] = target.host
    last_exc: Exception | None = None
    for ip in target.addresses:
        if deadline.expired():
            break
        try:
            with _client(policy, deadline) as client:
                req = client.build_request(
                    method,
                    _ip_url(target, ip),
                    content=content,
                    headers=hdrs,
                    extensions=extensions,
                )
                resp = client.send(req, stream=True)
                try:
                    declared = resp.headers.get("content-length")
                    if (
                        over_cap_is_error
                        and declared is not None
                        and declared.isdigit()
                        and int(declared) > max_bytes
                    ):
                        raise _err(
                            MEDIA_TOO_LARGE,
                            target.url,
                            f"the response is {int(declared)} bytes; at most {max_bytes} are allowed",
                            parameter,
                            kind=ErrorKind.TOO_LARGE,
                        )
                    if resp.status_code in _REDIRECT_STATUSES:
                        body, exceeded = b"", False  # never read redirect bodies
                    else:
                        body, exceeded = _read_capped(resp.iter_bytes(), max_bytes, deadline)
                    if exceeded and over_cap_is_error:
                        raise _err(
                            MEDIA_TOO_LARGE,
                            target.url,
                            f"the response exceeds {max_bytes} bytes; reading stopped at the cap",
                            parameter,
                            kind=ErrorKind.TOO_LARGE,
                        )
                    return _Exchange(
                        status=resp.status_code,
                        headers={k.lower(): v for k, v in resp.headers.items()},
                        body=body,
                        url=target.url,
                        truncated=exceeded,
                    )
                finally:
                    # Closing an unread stream drops the connection instead of draining it.
                    resp.close()
        except httpx.ConnectError as exc:
            last_exc = exc  # try the next vetted address
            continue
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise _err(
                FETCH_TIMEOUT,
                target.url,
                f"timed out ({type(exc).__name__}; connect {policy.connect_timeout}s, "
                f"read {policy.read_timeout}s, total {policy.total_timeout}s)",
                parameter,
                kind=ErrorKind.TIMEOUT,
            ) from None
        except httpx.HTTPError as exc:
            raise _err(
                FETCH_FAILED, target.url, f"request failed ({type(exc).__name__}: {exc})", parameter
            ) from None
    if deadline.expired():
        raise _err(
            FETCH_TIMEOUT,
            target.url,
            f"timed out (total {policy.total_timeout}s)",
            parameter,
            kind=ErrorKind.TIMEOUT,
        )
    raise _err(
        FETCH_FAILED,
        target.url,
        f"cannot connect ({type(last_exc).__name__}: {last_exc})",
        parameter,
    )


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
) -> _Exchange:
    deadline = _Deadline(policy.total_timeout)
    hdrs = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
    # Decoded bytes are what we count; asking for identity keeps a small gzip body from
    # expanding into a huge one inside a single chunk.
    hdrs.setdefault("Accept-Encoding", "identity")
    method = method.upper()
    target = _vet(url, policy, parameter)
    for _hop in range(policy.max_redirects + 1):
        ex = _one_hop(
            target, method, content, hdrs, policy, deadline, max_bytes, over_cap_is_error, parameter
        )
        location = ex.headers.get("location")
        if not follow_redirects or ex.status not in _REDIRECT_STATUSES or not location:
            return ex
        next_url = urljoin(target.url, location)
        if ex.status == 303 or (ex.status in (301, 302) and method == "POST"):
            if method != "HEAD":
                method = "GET"
            content = None
            hdrs = {
                k: v for k, v in hdrs.items() if k.lower() not in ("content-type", "content-length")
            }
        new_target = _vet(next_url, policy, parameter)
        if (new_target.scheme, new_target.host, new_target.port) != (
            target.scheme,
            target.host,
            target.port,
        ):
            hdrs = {k: v for k, v in hdrs.items() if k.lower() not in _SENSITIVE_HEADERS}
        target = new_target
    raise _err(
        TOO_MANY_REDIRECTS,
        url,
        f"more than {policy.max_redirects} redirects (last to {redact(target.url)})",
        parameter,
        allowed_values=None,
    )


def fetch(
    url: str, *, max_bytes: int, policy: OutboundPolicy, parameter: str | None = None
) -> FetchResult:
    """GET ``url`` under the SSRF rules and return its body (at most ``max_bytes``).

    Redirects are followed (each hop vetted). A non-2xx answer raises ``fetchFailed``; a body over
    the cap raises ``mediaTooLarge`` (kind TOO_LARGE) as soon as the cap is passed, without
    reading the rest. ``parameter`` names the request field in errors (e.g. ``inputs.video``).
    Blocks: call it from a thread, or use :func:`afetch`.
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
    )
    if ex.status in _REDIRECT_STATUSES:
        raise _err(FETCH_FAILED, ex.url, f"redirect ({ex.status}) without a Location", parameter)
    if not 200 <= ex.status < 300:
        raise _err(FETCH_FAILED, ex.url, f"the server answered HTTP {ex.status}", parameter)
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
) -> OutboundResponse:
    """Send one request (webhook POST, upload PUT, callback) under the SSRF rules.

    Any HTTP status is returned, not raised: the caller decides what to retry. The response body is
    cut at ``max_bytes`` (``truncated`` tells), since a receiver's chatter never matters. Redirects
    are not followed unless asked (a webhook that redirects is usually misconfigured).
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
