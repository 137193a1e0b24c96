"""The client's address: the peer, or behind our own proxies the address they saw.

A header such as X-Forwarded-For is believed only when the peer is one of `server.trusted_proxies`
(anyone else could write any address into it and walk past the per-address limits), and only as
an IP address: of a list, the rightmost entry that is not a trusted proxy is the client.
"""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # an IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d
    mapped = getattr(addr, "ipv4_mapped", None)
    return mapped or addr


def client_ip(request: web.Request, header: str, trusted: tuple[str, ...]) -> str:
    peer = _address(request.remote or "")
    if peer is None:
        return "unknown"
    proxies = networks(trusted)
    if not header or not from_trusted_proxy(request, trusted):
        return str(peer)
    for entry in reversed(request.headers.get(header, "").split(",")[-16:]):
        addr = _address(entry)
        if addr is None:
            break  # not an address: believe nothing further left
        if not any(addr in net for net in proxies):
            return str(addr)
    return str(peer)


def from_trusted_proxy(request: web.Request, trusted: tuple[str, ...]) -> bool:
    peer = _address(request.remote or "")
    return peer is not None and any(peer in net for net in networks(trusted))
