import pytest

from proxy.policy import policies
from proxy.ratelimit import limiter
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
