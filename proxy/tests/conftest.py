import pytest
import urllib3

from keys import services
from proxy.policy import policies
from proxy.ratelimit import limiter
from proxy.tests.relay_helpers import UPSTREAM_CREDENTIAL, basic
from proxy.tests.upstream_server import UpstreamServer
from proxy.usage import usage


@pytest.fixture(scope="module")
def running_upstream_server():
    """One real upstream on loopback per test module; stopping it cuts any connection still open."""
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def upstream_server(running_upstream_server):
    """The module's upstream, with no request recorded yet (routes: proxy/tests/upstream_server.py)."""
    running_upstream_server.requests.clear()
    return running_upstream_server


@pytest.fixture(autouse=True)
def fresh_proxy_state():
    """Each test starts with empty policy caches, leases and usage counters."""
    policies.clear()
    limiter._leases.clear()
    usage.discard_pending()
    yield
    policies.clear()


@pytest.fixture
def echo(upstream_server):
    """The global upstream `echo` (the upstream server's /echo route), with a bearer credential."""
    return services.upstream_create(
        tenant=None,
        slug="echo",
        base_url=f"{upstream_server.url}/echo",
        auth_type="bearer",
        auth_value=UPSTREAM_CREDENTIAL,
        allow_private_network=True,
        timeout_seconds=2,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def local_upstream(db):
    """A staff-made upstream on loopback: local_upstream(slug, base_url, **fields)."""

    def make(slug: str, base_url: str, **fields):
        return services.upstream_create(
            tenant=None,
            slug=slug,
            base_url=base_url,
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
            **fields,
        )

    return make


@pytest.fixture
def make_key(tenant, echo):
    """make_key(**fields) -> (key, secret), a key of `tenant` on `echo` unless `upstreams` says."""

    def make(**fields):
        fields.setdefault("upstreams", [echo])
        return services.api_key_create(tenant=tenant, name="app", actor="test", **fields)

    return make


@pytest.fixture
def pool():
    manager = urllib3.PoolManager(retries=False, timeout=10)
    yield manager
    manager.clear()


@pytest.fixture
def proxy(site, pool):
    """Call the proxy: proxy(key, path, method=..., headers=..., body=..., upstream=..., secret=...)."""

    def call(key, path="", *, method="GET", headers=None, body=None, upstream="echo", secret=None):
        headers = dict(headers or {})
        if secret:
            headers["Authorization"] = basic(secret)
        url = f"{site.url}/proxy/{upstream}/{key.key_id}/{path}"
        return pool.request(method, url, headers=headers, body=body, redirect=False)

    return call
