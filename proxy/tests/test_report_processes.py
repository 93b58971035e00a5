"""Report mode and key-sharing signals as production runs them: bin/serve (granian, 2 workers), PostgreSQL
and Redis, the usage roll-up, then the portal and the management API."""

import time

import pytest
import urllib3
from django.urls import reverse

from keys import services
from keys.models import ApiKey, Role
from keys.sharing import sharing_roll_up
from keys.usage.roll_up import usage_roll_up
from proxy.tests.test_processes import pytestmark, serve  # noqa: F401 - the marks: PostgreSQL and Redis

ORIGIN = "https://evil.test"


@pytest.fixture
def key_on_echo(tenant, upstream_server):
    """key_on_echo(**fields) -> (key, secret): a key of `tenant` on the upstream server's /echo."""
    echo = services.upstream_create(
        tenant=None,
        slug="echo",
        base_url=f"{upstream_server.url}/echo",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
    )

    def make(**fields):
        return services.api_key_create(tenant=tenant, name="app", upstreams=[echo], actor="test", **fields)

    return make


def _roll_up() -> None:
    time.sleep(1.5)  # the servers flush their counters every second
    usage_roll_up(now=time.time() + 61)  # the minute in progress too
    sharing_roll_up()


def test_report_mode_passes_an_unlisted_origin_the_portal_shows_it_and_enforce_refuses_the_next(
    key_on_echo, portal_client
):
    key, _ = key_on_echo(allowed_origins=["https://app.example.com"], report_only=["allowed_origins"])
    http = urllib3.PoolManager(retries=False, timeout=10)
    with serve() as url:
        proxied = f"{url}/proxy/echo/{key.key_id}/x"
        answer = http.request("GET", proxied, headers={"Origin": ORIGIN})
        assert answer.status == 200
        assert answer.headers["X-Would-Reject"] == "origin_not_allowed"
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        _roll_up()

        client = portal_client(Role.DEVELOPER)
        page = client.get(reverse("portal:key_detail", args=[key.key_id])).content.decode()
        assert "Report mode:" in page
        table = page[page.index('id="would-reject"') :]
        assert "origin_not_allowed" in table and ORIGIN in table
        assert "it was called from an origin outside its allowlist" in page  # the sharing flag

        done = client.post(reverse("portal:key_check", args=[key.key_id]), {"check": "allowed_origins"})
        assert done.status_code == 302
        switched = time.monotonic()
        assert ApiKey.objects.get(pk=key.pk).report_only == []
        refused = 0
        while refused < 10:  # both workers: new connections spread over them
            status = http.request("GET", proxied, headers={"Origin": ORIGIN, "Connection": "close"}).status
            refused = refused + 1 if status == 403 else 0
            assert time.monotonic() - switched < 1.5, "a worker still let the origin through after 1 s"


def test_calls_from_many_addresses_and_origins_show_distinct_counts_and_the_flag(key_on_echo, api):
    key, _ = key_on_echo(allowed_origins=["https://app.example.com"], report_only=["allowed_origins"])
    http = urllib3.PoolManager(retries=False, timeout=10, maxsize=8)
    with serve(PROXY_TRUSTED_PROXIES="127.0.0.1") as url:
        for i in range(40):
            headers = {"X-Forwarded-For": f"198.51.100.{i}", "Origin": f"https://o{i % 25}.test"}
            assert http.request("GET", f"{url}/proxy/echo/{key.key_id}/x", headers=headers).status == 200
        _roll_up()
    body = api.get(f"/api/v1/keys/{key.key_id}/usage").json()
    today = body["sharing"]["days"][-1]
    assert 38 <= today["addresses"] <= 42, today  # HyperLogLog: approximate
    assert 24 <= today["origins"] <= 26, today
    assert today["user_agents"] == 1
    assert today["flagged"] == ["addresses_jump", "origins_jump"]
    assert body["sharing"]["flags"] == ["addresses_jump", "origin_outside_allowlist", "origins_jump"]
    assert sum(row["count"] for row in body["would_reject"] if row["code"] == "origin_not_allowed") == 40
    assert {"outcome": "would_reject", "code": "origin_not_allowed", "count": 40} in [
        {name: row[name] for name in ("outcome", "code", "count")} for row in body["results"]
    ]
