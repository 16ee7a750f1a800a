"""Address rules: which IP addresses the outbound path may reach, and how long it waits.

This module knows nothing about URLs or HTTP. It answers one question, "may we connect to this
address, and if not, why not?", for :mod:`reelserve.media.netguard.urls` (which vets a URL's host)
and, through it, for the transport that connects.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reelserve.settings import Settings

__all__ = ["IPAddress", "IPNetwork", "OutboundPolicy", "Resolver"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# A DNS name, ASCII (after IDNA), lower case; labels of 1-63 characters, an optional final dot.
HOSTNAME_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?$")

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
                if not HOSTNAME_RE.match(bare):
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
    """Why the default rules refuse ``addr`` (allow list not consulted)."""
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
