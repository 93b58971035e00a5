"""The caller's address, as the site, the proxy and the audit trail all read it: the peer, or, behind a
trusted load balancer (PROXY_TRUSTED_PROXIES), the address that balancer saw."""

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

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
