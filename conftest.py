"""Shared fixtures: rows built through the services, as users make them."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test.testcases import LiveServerThread

from keys import services
from keys.models import Role

# The keys tests' fixtures (tenants' upstreams, API and portal clients by role, fresh rate limits) serve
# the portal's tests too.
pytest_plugins = ["keys.tests.fixtures"]


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user(
        username="dev@tenant.example", email="dev@tenant.example", password="pw"
    )


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_superuser(
        username="staff", email="staff@site.example", password="pw"
    )


@pytest.fixture
def tenant(db):
    tenant, _ = services.tenant_create(slug="acme", owner_email="owner@acme.example", actor="test")
    return tenant


@pytest.fixture
def other_tenant(db):
    tenant, _ = services.tenant_create(slug="globex", owner_email="owner@globex.example", actor="test")
    return tenant


@pytest.fixture
def member(tenant, user):
    services.membership_set(tenant=tenant, user=user, role=Role.DEVELOPER, actor="test")
    return user


@pytest.fixture
def loopback_upstream(db):
    """A global upstream on loopback (staff allowed the private network), for rows that need one."""
    return services.upstream_create(
        tenant=None,
        slug="local",
        base_url="http://127.0.0.1:9",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )


@pytest.fixture
def api_key_and_secret(tenant, loopback_upstream):
    return services.api_key_create(tenant=tenant, name="web app", upstreams=[loopback_upstream], actor="test")


@pytest.fixture
def api_key(api_key_and_secret):
    return api_key_and_secret[0]


class _Site:
    def __init__(self, url: str) -> None:
        self.url = url


def _wait_for_request_threads_to_disconnect(timeout: float = 5.0) -> None:
    """Keep-alive connections end after their client closes, and only then do the server's request
    threads close their database sessions; PostgreSQL refuses to drop the test database before that."""
    connection = connections["default"]
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


@pytest.fixture
def site(transactional_db):
    """The whole product served over HTTP in a thread, through the same WSGI application as production
    (the /proxy/ fast path included), sharing the test database."""
    from proxy.wsgi import with_proxy_fast_path

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
    _wait_for_request_threads_to_disconnect()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skipped tests are said out loud, with why: a test that could not run here proves nothing."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section(f"{len(skipped)} TESTS SKIPPED: they did not run here", sep="!", yellow=True)
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.line(f"  {count:4d} × {reason}", yellow=True)
