"""Who is on the other end of a request: address lists (CIDRs) and proxy headers.

``X-Forwarded-For``, ``X-Real-IP`` and ``X-Forwarded-Proto`` are believed only when the
peer that sent them is a proxy named in ``WXTASKS_TRUSTED_PROXIES``; from anyone else they
are ignored (anyone can write them). The console and the callback receiver both ask
:func:`client_address` who is calling.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` as networks (a bare address is a /32 or /128);
    ValueError names the entry that is not one."""
    networks = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or a CIDR network") from None
    return tuple(networks)


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """True when ``address`` (an IP, maybe IPv4-mapped IPv6) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def client_address(
    peer: str, headers: Mapping[str, str], trusted: tuple[Network, ...]
) -> tuple[str, str | None]:
    """(the client's address, the scheme it used or None when unknown) for a request that
    came from ``peer``. Only a trusted peer's ``X-Forwarded-For`` is read, right to left,
    skipping the trusted proxies in it: the first address no trusted proxy owns is the
    client (entries further left were written by the client itself and prove nothing)."""
    if not trusted or not in_networks(peer, trusted):
        return peer, None
    forwarded = [a.strip() for a in headers.get("X-Forwarded-For", "").split(",") if a.strip()]
    client = peer
    for address in reversed(forwarded):
        client = address
        if not in_networks(address, trusted):
            break
    if not forwarded:
        client = headers.get("X-Real-IP", "").strip() or peer
    proto = headers.get("X-Forwarded-Proto", "").strip().lower() or None
    return client, proto if proto in ("http", "https") else None
