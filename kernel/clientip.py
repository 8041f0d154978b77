"""The client's address, and the one place it is decided.

The web server (livermore/webserver.py) puts the client's address into the ASGI scope: the TCP peer,
or, when the peer is one of settings.TRUSTED_PROXIES (addresses or networks; none by default), the
address those proxies forwarded. X-Forwarded-For is read right to left, hop by hop, while the hop is a
trusted proxy; the first address not trusted is the client (the leftmost entries are whatever the
client wrote). From a peer that is not trusted, every forwarding header is dropped before the
application sees the request, so nothing downstream can read a forged one.

Django puts that address into REMOTE_ADDR; the throttles, django-axes, the login limit per address
and the audit log all read it through `client_ip`.
"""

import ipaddress
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from functools import cache
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-port",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-real-ip",
        b"forwarded",
    }
)

# The client address of the request being handled (set by ClientAddressMiddleware), for code that
# is handed no request: the audit log.
current_client_ip: ContextVar[str] = ContextVar("current_client_ip", default="")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """'10.0.0.1', '10.0.0.0/8', '::1' -> networks; ValueError on anything else."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


@cache
def trusted_proxies() -> tuple[Network, ...]:
    return parse_networks(settings.TRUSTED_PROXIES)


def parse_address(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:443"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def forwarded_client(peer: str, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str:
    """The client behind `peer`: `peer` itself unless it is a trusted proxy; else the X-Forwarded-For
    hops (every header line, comma-separated) read right to left past trusted proxies. A hop that is
    not an address ends the walk at the last proxy that could vouch for it."""
    address = parse_address(peer)
    if not is_trusted(address, networks):
        return peer
    client = str(address)
    hops = [hop for line in forwarded_for for hop in line.split(",")]
    for hop in reversed(hops):
        hop_address = parse_address(hop)
        if hop_address is None:
            break
        client = str(hop_address)
        if not is_trusted(hop_address, networks):
            break
    return client


def resolve_scope(scope: dict[str, Any], peer: tuple[str, int] | None, networks: Sequence[Network]) -> None:
    """Sets scope["client"] (and an HTTP scope's "scheme") from the peer and, if the peer is a
    trusted proxy, the forwarding headers; drops those headers when it is not. In place."""
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
    trusted = bool(networks) and peer is not None and is_trusted(parse_address(peer[0]), networks)
    if not trusted:
        scope["headers"] = [
            (name, value) for name, value in headers if name.lower() not in FORWARDING_HEADERS
        ]
        scope["client"] = list(peer) if peer is not None else None
        return
    assert peer is not None
    forwarded_for = [value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-for"]
    client = forwarded_client(peer[0], forwarded_for, networks)
    scope["client"] = [client, 0 if client != peer[0] else peer[1]]
    protos = [value.decode("latin-1") for name, value in headers if name.lower() == b"x-forwarded-proto"]
    proto = protos[-1].split(",")[-1].strip().lower() if protos else ""
    if proto in ("http", "https"):
        scope["scheme"] = proto if scope.get("type") == "http" else {"http": "ws", "https": "wss"}[proto]


def client_ip(request: HttpRequest) -> str:
    """The client's address as the web server resolved it (AXES_CLIENT_IP_CALLABLE too)."""
    return str(request.META.get("REMOTE_ADDR") or "")


class ClientAddressMiddleware:
    """Makes the request's client address available to code handed no request (the audit log)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        token = current_client_ip.set(client_ip(request))
        try:
            return self.get_response(request)
        finally:
            current_client_ip.reset(token)

    async def _acall(self, request: HttpRequest) -> Any:
        token = current_client_ip.set(client_ip(request))
        try:
            return await self.get_response(request)
        finally:
            current_client_ip.reset(token)
