"""Which part of the product answers on which host (DESIGN.md: `PROXY_HOSTS`).

Proxied content is someone else's. Even sandboxed (proxy.responses.CONTENT_ISOLATION), it is safest on
a host of its own, where no portal or admin cookie is ever sent: with `PROXY_HOSTS` set, `/proxy/`
answers only on those hosts and the site (portal, admin, API) never does. The health URLs and /metrics answer
on every host, so a load balancer or Prometheus can probe either.
"""

from typing import Literal

from django.conf import settings
from django.http.request import split_domain_port, validate_host

PROXY_PREFIX = "/proxy/"
# DESIGN.md: ANY /proxy/<upstream>/<key_id>/<path>; with no path (with or without the slash) the call
# goes to the upstream's base URL itself. Matched after PROXY_PREFIX (proxy/gateway.py, proxy/urls.py).
RELAY_PATH = r"^(?P<upstream_slug>[a-z0-9-]+)/(?P<key_id>[^/]+)(?:/(?P<path>.*))?$"
EVERY_HOST_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

Route = Literal["proxy", "site", "wrong_host"]


def route_for(host_header: str, path: str) -> Route:
    """`proxy` or `site` for the part that serves `path` on this Host; `wrong_host` when that part
    does not answer on it. Without PROXY_HOSTS every host serves both."""
    is_proxy_path = path.startswith(PROXY_PREFIX)
    proxy_hosts = settings.PROXY_HOSTS
    if not proxy_hosts or path in EVERY_HOST_PATHS:
        return "proxy" if is_proxy_path else "site"
    domain, _ = split_domain_port(host_header)
    on_proxy_host = bool(domain) and validate_host(domain, proxy_hosts)
    if on_proxy_host != is_proxy_path:
        return "wrong_host"
    return "proxy" if is_proxy_path else "site"


def wrong_host_message(path: str) -> str:
    if path.startswith(PROXY_PREFIX):
        return "The proxy does not answer on this host; call it on its own host."
    return "This host serves only the proxy: /proxy/<upstream>/<key_id>/<path>."
