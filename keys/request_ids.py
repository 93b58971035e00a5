"""What the site and the proxy read of the caller: its request id and its address."""

import functools
import ipaddress
import re
import uuid

from django.conf import settings
from django.http import HttpRequest

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def request_id(request: HttpRequest) -> str:
    """The request's id, chosen once: the caller's X-Request-Id when it is a sane token, else a new one."""
    chosen = getattr(request, "request_id", None)
    if chosen is None:
        incoming = request.headers.get("X-Request-Id", "")
        chosen = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = chosen
    return chosen


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxy_network(entry: str) -> Network | None:
    """The network a PROXY_TRUSTED_PROXIES entry names; None when it names none (a system check says so)."""
    try:
        return ipaddress.ip_network(entry.strip())
    except (ValueError, TypeError, AttributeError):
        return None


@functools.lru_cache(maxsize=8)
def _trusted_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    # Parsed once per value of the setting, not per request. A bad entry trusts nobody rather than
    # failing every request: keys.system_checks refuses it at start, so it is only ever here by mistake.
    return tuple(network for entry in entries if (network := trusted_proxy_network(entry)) is not None)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: HttpRequest) -> str:
    """The peer, unless it is a trusted load balancer: then the right-most X-Forwarded-For hop that is
    not one. A client cannot choose it (rate limits and the audit trail rely on that)."""
    peer = request.META.get("REMOTE_ADDR", "")
    networks = _trusted_networks(tuple(settings.PROXY_TRUSTED_PROXIES))
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return peer
