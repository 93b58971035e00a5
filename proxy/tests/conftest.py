import pytest
from django.db import connections
from django.test.testcases import LiveServerThread

from proxy.policy import policies
from proxy.ratelimit import limiter
from proxy.tests.upstream_server import UpstreamServer
from proxy.usage import usage
from proxy.wsgi import with_proxy_fast_path


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
    usage.pending()
    yield
    policies.clear()


class _Site:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture
def site(transactional_db):
    """The whole product served over HTTP in a thread, through the same WSGI application as production
    (the /proxy/ fast path included), sharing the test database."""
    overrides = {}
    for connection in connections.all():
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            connection.inc_thread_sharing()
            overrides[connection.alias] = connection
    thread = LiveServerThread(
        "127.0.0.1", static_handler=with_proxy_fast_path, connections_override=overrides
    )
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield _Site(f"http://127.0.0.1:{thread.port}")
    thread.terminate()
    for connection in overrides.values():
        connection.dec_thread_sharing()
