"""The customer's address behind an HTTP request or a WebSocket, for per-IP limits and logs.

The ASGI server reports the TCP peer in `scope["client"]`. Behind a reverse proxy that peer is
the proxy, and the customer's address is in X-Forwarded-For, which anyone can also write
themselves. So the header is read only when the peer is one of settings.TRUSTED_PROXIES, and
then from the right: each trusted proxy appends the address it saw, so the right-most address
that is not a trusted proxy is the first one nobody we trust could have forged. Everything to
its left came from the customer and is ignored.

Daphne must then run without --proxy-headers: that option copies the header into
`scope["client"]` for every peer, trusted or not.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# TRUSTED_PROXIES may name this to trust a peer without an address: a front proxy that talks
# to Daphne over a unix socket, which only a local process can reach.
UNIX_PEER = "unix"
# Longest X-Forwarded-For we read; longer chains are a forgery or a loop, not a real path.
MAX_HOPS = 32

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]


def client_ip(scope_or_headers: dict | Headers, peer: str | None = None) -> str:
    """The customer's address as a normalised string ("203.0.113.7", "2001:db8::1"), or ""
    when none can be told (no peer address and no trusted unix proxy in front).

    `scope_or_headers` is an ASGI scope (HTTP or WebSocket; the peer defaults to its
    "client"), its raw header list of (name, value) bytes pairs, or a str mapping such as
    Django's `request.headers`.
    """
    headers: Headers
    if isinstance(scope_or_headers, dict) and "type" in scope_or_headers:
        headers = scope_or_headers.get("headers") or []
        if peer is None:
            client = scope_or_headers.get("client")
            peer = client[0] if client else None
    else:
        headers = scope_or_headers
    trusted, trust_unix = _trusted(tuple(settings.TRUSTED_PROXIES))

    peer_ip = parse_ip(peer or "")
    if peer_ip is None:
        # No address: a unix-socket peer. Only a configured local proxy makes its header worth
        # reading; otherwise (or for a peer that is no address at all) there is nothing to go on.
        if peer or not trust_unix:
            return ""
    elif not _is_trusted(peer_ip, trusted):
        return str(peer_ip)

    nearest: IPAddress | None = peer_ip
    for item in reversed(_forwarded_for(headers)[-MAX_HOPS:]):
        address = parse_ip(item)
        if address is None:
            # Garbage where a proxy we trust would have written an address: nothing further
            # left can be believed, so the last address a trusted hop reported stands.
            break
        if not _is_trusted(address, trusted):
            return str(address)
        nearest = address
    # Every hop is one of our proxies (or the header says nothing): the farthest one we
    # reached is the client as far as anyone can tell.
    return str(nearest) if nearest is not None else ""


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it ("1.2.3.4", "1.2.3.4:5678", "[2001:db8::1]:443",
    "2001:db8::1"), IPv4-mapped IPv6 folded to IPv4; None for anything else."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # Dual-stack listeners report IPv4 clients as ::ffff:a.b.c.d; one customer, one form.
        return address.ipv4_mapped
    return address


def _forwarded_for(headers: Headers) -> list[str]:
    """Every X-Forwarded-For entry, left to right; repeated headers are one list, in order."""
    if isinstance(headers, Mapping):
        values = [
            value
            for name, value in headers.items()
            if name.lower() in ("x-forwarded-for", "http_x_forwarded_for")
        ]
    else:
        values = [
            value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"
        ]
    return [item for value in values for item in value.split(",") if item.strip()]


def _is_trusted(address: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


@lru_cache(maxsize=8)
def _trusted(entries: tuple[str, ...]) -> tuple[tuple[IPNetwork, ...], bool]:
    """TRUSTED_PROXIES parsed once per value: networks (a bare IP is a /32 or /128) and
    whether a unix-socket peer is trusted. A typo must not silently trust nobody, or
    everybody: it stops the process with the entry named."""
    networks = []
    trust_unix = False
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if entry.lower() == UNIX_PEER:
            trust_unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES: {entry!r} is not an IP address or network (e.g. 10.0.0.5, "
                f"10.0.0.0/8, fd00::/8, or {UNIX_PEER!r})."
            ) from exc
    return tuple(networks), trust_unix
