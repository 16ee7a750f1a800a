"""URL grammar: what an outbound URL may look like, and where it may lead.

:func:`vet` checks one URL against every rule and, when asked, resolves its host once and vets
every address against the :class:`~reelserve.media.netguard.policy.OutboundPolicy`. The result, a
:class:`Target`, names the addresses a connection may go to. Nothing here opens a connection.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reelserve.errors import OutboundBlockedError
from reelserve.media.netguard.policy import HOSTNAME_RE, IPAddress, OutboundPolicy

__all__ = [
    "BLOCKED_ADDRESS",
    "FETCH_FAILED",
    "FETCH_TIMEOUT",
    "INVALID_URL",
    "MEDIA_TOO_LARGE",
    "TOO_MANY_REDIRECTS",
    "Target",
    "check_url",
    "redact",
    "refusal",
    "vet",
]

# Error codes (all raised as OutboundBlockedError).
INVALID_URL = "invalidURL"
BLOCKED_ADDRESS = "blockedAddress"
FETCH_FAILED = "fetchFailed"
FETCH_TIMEOUT = "fetchTimeout"
TOO_MANY_REDIRECTS = "tooManyRedirects"
MEDIA_TOO_LARGE = "mediaTooLarge"

_NUMERIC_LABEL_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


@dataclass(frozen=True)
class Target:
    """A vetted URL: what it names and which addresses a connection to it may use."""

    url: str  # the normalised logical URL (host name kept)
    scheme: str
    host: str  # ASCII host name, or the canonical IP text
    port: int
    addresses: tuple[str, ...]  # vetted IPs to connect to, in order (empty when not resolved)
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


def refusal(
    code: str, url: str, why: str, parameter: str | None = None, **kw: Any
) -> OutboundBlockedError:
    """The error for a refused or failed outbound URL; the message starts with the redacted URL."""
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


def vet(
    url: str, policy: OutboundPolicy, parameter: str | None = None, *, resolve: bool = True
) -> Target:
    """Check a URL against every rule; with ``resolve``, resolve its host once and vet each address.

    One refused address refuses the whole name. Raises
    :class:`~reelserve.errors.OutboundBlockedError` (``invalidURL``, ``blockedAddress``, or
    ``fetchFailed`` when the name does not resolve).
    """
    if not isinstance(url, str) or not url:
        raise refusal(INVALID_URL, str(url), "empty URL; give an absolute http(s) URL", parameter)
    if len(url) > 8192:
        raise refusal(INVALID_URL, url, "URL longer than 8192 characters", parameter)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise refusal(
            INVALID_URL, url, "URL contains whitespace, control characters or '\\'", parameter
        )
    try:
        parts = urlsplit(url)
        port_raw = parts.port
    except ValueError as exc:
        raise refusal(INVALID_URL, url, f"not a valid URL ({exc})", parameter) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refusal(
            INVALID_URL,
            url,
            f"scheme {parts.scheme or '(none)'!r} is not allowed",
            parameter,
            allowed_values=["http", "https"],
        )
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise refusal(INVALID_URL, url, "credentials in the URL are not allowed", parameter)
    raw_host = parts.hostname or ""
    if not raw_host:
        raise refusal(INVALID_URL, url, "the URL has no host", parameter)
    port = port_raw if port_raw is not None else (443 if scheme == "https" else 80)
    if port == 0:
        raise refusal(INVALID_URL, url, "port 0 is not allowed", parameter)
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")

    literal: IPAddress | None = None
    if bracketed or ":" in raw_host:
        if "%" in raw_host:
            raise refusal(INVALID_URL, url, "IPv6 zone identifiers are not allowed", parameter)
        try:
            literal = ipaddress.IPv6Address(raw_host)
        except ValueError:
            raise refusal(
                INVALID_URL, url, f"{raw_host!r} is not an IPv6 address", parameter
            ) from None
        host = str(literal)
    else:
        try:
            host = raw_host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise refusal(
                INVALID_URL, url, f"host {raw_host!r} is not a valid name", parameter
            ) from None
        try:
            loose = _parse_ipv4_loose(host)
        except ValueError as exc:
            raise refusal(
                INVALID_URL,
                url,
                f"host {raw_host!r} is not a valid IPv4 address ({exc})",
                parameter,
            ) from None
        if loose is not None:
            if host != str(loose):
                reason = policy.address_refusal(loose)
                if reason:
                    raise refusal(
                        BLOCKED_ADDRESS,
                        url,
                        f"host {raw_host!r} is an encoded form of {loose}, a {reason} address",
                        parameter,
                    )
                raise refusal(
                    INVALID_URL,
                    url,
                    f"host {raw_host!r} is a non-canonical IPv4 literal; write it as {loose}",
                    parameter,
                )
            literal = loose
        elif not HOSTNAME_RE.match(host):
            raise refusal(INVALID_URL, url, f"host {raw_host!r} is not a valid name", parameter)

    host_for_url = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    default_port = 443 if scheme == "https" else 80
    netloc = host_for_url if port == default_port else f"{host_for_url}:{port}"
    logical = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))

    if literal is not None:
        reason = policy.address_refusal(literal)
        if reason:
            raise refusal(
                BLOCKED_ADDRESS, url, f"address {literal} is refused ({reason})", parameter
            )
        addr = literal.ipv4_mapped if isinstance(literal, ipaddress.IPv6Address) else None
        addresses: tuple[str, ...] = (str(addr or literal),)
    elif not resolve:
        addresses = ()
    else:
        addresses = _resolve_and_vet(url, host, port, policy, parameter)
    return Target(
        url=logical,
        scheme=scheme,
        host=host,
        port=port,
        addresses=addresses,
        is_ip_literal=literal is not None,
    )


def _resolve_and_vet(
    url: str, host: str, port: int, policy: OutboundPolicy, parameter: str | None
) -> tuple[str, ...]:
    """Resolve ``host`` once; every address must pass (unless the operator trusts the name)."""
    host_trusted = policy.host_allowed(host)
    try:
        resolved = policy.resolve(host.rstrip("."), port)
    except (OSError, UnicodeError) as exc:
        raise refusal(
            FETCH_FAILED, url, f"cannot resolve host {host!r} ({exc})", parameter
        ) from None
    if not resolved:
        raise refusal(FETCH_FAILED, url, f"host {host!r} resolves to no address", parameter)
    vetted: list[str] = []
    for text in resolved:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise refusal(
                FETCH_FAILED, url, f"resolver returned {text!r}, not an address", parameter
            ) from None
        reason = None if host_trusted else policy.address_refusal(ip)
        if reason:
            # One bad answer refuses the whole name: a name mixing public and internal
            # addresses is either misconfigured or an attack.
            raise refusal(
                BLOCKED_ADDRESS,
                url,
                f"host {host!r} resolves to {ip}, which is refused ({reason})",
                parameter,
            )
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if str(ip) not in vetted:
            vetted.append(str(ip))
    return tuple(vetted)


def check_url(
    url: str, *, policy: OutboundPolicy, resolve: bool = False, parameter: str | None = None
) -> str:
    """Refuse a URL early (e.g. ``webhookURL`` at submit time) without connecting.

    With ``resolve=False`` only the syntax and IP literals are checked (no DNS, cheap enough for a
    request handler); the real call vets again, with DNS, when it connects. Returns the normalised
    URL. Raises :class:`~reelserve.errors.OutboundBlockedError`.
    """
    return vet(url, policy, parameter, resolve=resolve).url
