"""What the site and the proxy read of the caller: its request id and its address."""

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


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net) for net in settings.PROXY_TRUSTED_PROXIES)


def client_address(request: HttpRequest) -> str:
    """The peer, unless it is a trusted load balancer: then the right-most X-Forwarded-For hop that is
    not one. A client cannot choose it (rate limits and the audit trail rely on that)."""
    peer = request.META.get("REMOTE_ADDR", "")
    if not settings.PROXY_TRUSTED_PROXIES or not _trusted(peer):
        return peer
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop):
            return hop
    return peer
