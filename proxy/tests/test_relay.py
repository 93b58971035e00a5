"""The real proxy over HTTP (Django's live server) to a real upstream server on loopback."""

import json
import time
from datetime import timedelta

import pytest
import urllib3
from django.test import override_settings
from django.utils import timezone

from keys import services
from proxy.tests.relay_helpers import UPSTREAM_CREDENTIAL, basic, error_code, raw_get
from proxy.tests.upstream_server import refused_port

pytestmark = pytest.mark.django_db(transaction=True)

APP = "https://app.example.com"


# --- Relay ----------------------------------------------------------------------------------------


def test_relays_path_query_and_body_with_the_upstreams_credential_not_the_clients(
    proxy, make_key, upstream_server
):
    key, secret = make_key()
    response = proxy(
        key,
        "blocks/latest?full=1&x=%20y",
        method="POST",
        secret=secret,
        headers={"Cookie": "session=abc", "Content-Type": "application/json", "X-Custom": "kept"},
        body=b'{"hello": "world"}',
    )
    assert response.status == 200
    seen = upstream_server.requests[-1]
    headers = {name.lower(): value for name, value in seen.headers}
    assert seen.method == "POST"
    assert seen.path == "/echo/blocks/latest?full=1&x=%20y"
    assert seen.body == b'{"hello": "world"}'
    assert headers["authorization"] == f"Bearer {UPSTREAM_CREDENTIAL}"
    assert "cookie" not in headers
    assert headers["x-custom"] == "kept"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize("suffix", ["", "/"])
def test_key_url_without_a_path_reaches_the_base_url(site, pool, make_key, upstream_server, suffix):
    key, secret = make_key()
    url = f"{site.url}/proxy/echo/{key.key_id}{suffix}"
    response = pool.request("POST", url, headers={"Authorization": basic(secret)}, body=b"{}")
    assert response.status == 200
    assert upstream_server.requests[-1].path == "/echo"


def test_hop_by_hop_set_cookie_and_upstream_cors_headers_are_dropped_from_the_answer(proxy, make_key):
    key, secret = make_key()
    response = proxy(key, "x", secret=secret)
    assert response.status == 200
    assert response.headers["X-Upstream"] == "echo"
    for dropped in ("Set-Cookie", "X-Hop", "Keep-Alive", "Access-Control-Allow-Origin"):
        assert dropped not in response.headers


def test_hop_by_hop_request_headers_are_not_forwarded(proxy, make_key, upstream_server):
    key, secret = make_key()
    proxy(key, "x", secret=secret, headers={"Connection": "X-Private", "X-Private": "1", "Proxy-Thing": "1"})
    names = {name.lower() for name, _ in upstream_server.requests[-1].headers}
    assert "x-private" not in names and "proxy-thing" not in names


def test_redirects_are_passed_back_not_followed(proxy, make_key, upstream_server, tenant, local_upstream):
    redirecting = local_upstream("redirecting", f"{upstream_server.url}/redirect")
    key, secret = make_key(upstreams=[redirecting])
    response = proxy(key, "", secret=secret, upstream="redirecting")
    assert response.status == 302
    assert response.headers["Location"] == "http://example.invalid/elsewhere"


def test_upstream_status_is_relayed(proxy, make_key, upstream_server, local_upstream):
    status = local_upstream("status", f"{upstream_server.url}/status")
    key, secret = make_key(upstreams=[status])
    assert proxy(key, "418", secret=secret, upstream="status").status == 418


def test_answer_is_streamed_before_the_upstream_finishes(site, make_key, upstream_server, local_upstream):
    stream = local_upstream("stream", f"{upstream_server.url}/stream", timeout_seconds=10)
    key, secret = make_key(upstreams=[stream])
    streaming = urllib3.PoolManager(retries=False)
    started = time.monotonic()
    response = streaming.request(
        "GET",
        f"{site.url}/proxy/stream/{key.key_id}/?chunks=5&size=1000&delay=0.3",
        headers={"Authorization": basic(secret)},
        preload_content=False,
    )
    first = next(response.stream(1000))
    first_at = time.monotonic() - started
    rest = b"".join(response.stream(65536))
    total = time.monotonic() - started
    assert len(first) + len(rest) == 5000
    assert first_at < 0.6 < total


def test_timeout_is_a_total_deadline_and_answers_504(proxy, make_key, upstream_server, echo, local_upstream):
    hanging = local_upstream("hang", f"{upstream_server.url}/hang", timeout_seconds=1)
    key, secret = make_key(upstreams=[hanging])
    started = time.monotonic()
    response = proxy(key, "", secret=secret, upstream="hang")
    assert response.status == 504 and error_code(response) == "upstream_timeout"
    assert time.monotonic() - started < 2.5


def test_connection_refused_is_502_and_fast(proxy, make_key, local_upstream):
    refused = local_upstream("refused", f"http://127.0.0.1:{refused_port()}")
    key, secret = make_key(upstreams=[refused])
    started = time.monotonic()
    response = proxy(key, "", secret=secret, upstream="refused")
    assert response.status == 502 and error_code(response) == "upstream_unreachable"
    assert time.monotonic() - started < 1.0


def test_private_address_is_refused_at_connect_time_for_a_tenant_upstream(proxy, make_key, tenant):
    # Saved while it pointed at a public address; now it resolves to loopback (as DNS rebinding would).
    upstream = services.upstream_create(
        tenant=tenant, slug="rebound", base_url="http://93.184.215.14", actor="test", resolve=lambda h: []
    )
    type(upstream).objects.filter(pk=upstream.pk).update(base_url="http://localhost:9")
    key, secret = make_key(upstreams=[upstream])
    response = proxy(key, "", secret=secret, upstream="rebound")
    assert response.status == 502 and error_code(response) == "upstream_unreachable"


# --- Path escapes (check 9) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [
        "..",
        "../../admin",
        "a/../../admin",
        "%2e%2e/admin",
        "%2E%2E/admin",
        "..%2fadmin",
        "..%2Fadmin",
        "%252e%252e/admin",
        "%252e%252e%252fadmin",
        "a/%2e%2e/%2e%2e/admin",
        "//evil.test/x",
        "http://evil.test/x",
        "a%00b",
        "a%5c..%5cb",
    ],
)
def test_path_escapes_are_400_and_never_reach_the_upstream(site, make_key, upstream_server, tail):
    key, secret = make_key()
    before = len(upstream_server.requests)
    response = raw_get(site, f"/proxy/echo/{key.key_id}/{tail}", {"Authorization": basic(secret)})
    assert response.status == 400
    assert len(upstream_server.requests) == before


@override_settings(PROXY_MAX_BODY_BYTES=1000)
def test_body_over_the_limit_is_413_before_any_upstream_byte(proxy, make_key, upstream_server):
    key, secret = make_key()
    before = len(upstream_server.requests)
    response = proxy(key, "x", method="POST", secret=secret, body=b"x" * 1001)
    assert response.status == 413 and error_code(response) == "payload_too_large"
    assert len(upstream_server.requests) == before
    assert proxy(key, "x", method="POST", secret=secret, body=b"x" * 1000).status == 200


# --- Checks, in order ---------------------------------------------------------------------------


def test_unknown_upstream_is_404(proxy, make_key):
    key, _ = make_key()
    response = proxy(key, upstream="nope")
    assert response.status == 404 and error_code(response) == "unknown_upstream"


def test_unknown_key_is_401_invalid_key(site, pool, echo):
    response = pool.request("GET", f"{site.url}/proxy/echo/pk_doesnotexist/")
    assert response.status == 401 and error_code(response) == "invalid_key"


def test_suspended_tenant_revoked_and_expired_keys(proxy, make_key, tenant):
    key, secret = make_key()
    assert proxy(key, secret=secret).status == 200
    services.tenant_set_active(tenant=tenant, is_active=False, actor="test")
    response = proxy(key, secret=secret)
    assert response.status == 403 and error_code(response) == "tenant_suspended"
    services.tenant_set_active(tenant=tenant, is_active=True, actor="test")
    services.api_key_update(api_key=key, expires_at=timezone.now() - timedelta(seconds=1), actor="test")
    response = proxy(key, secret=secret)
    assert response.status == 401 and error_code(response) == "key_expired"
    services.api_key_revoke(api_key=key, actor="test")
    response = proxy(key, secret=secret)
    assert response.status == 401 and error_code(response) == "key_revoked"


def test_key_not_allowed_on_the_upstream_is_403(proxy, make_key):
    key, secret = make_key(upstreams=[])
    response = proxy(key, secret=secret)
    assert response.status == 403 and error_code(response) == "upstream_not_allowed"


def test_secret_required_and_invalid_secret(proxy, make_key):
    key, secret = make_key(secret_required=True)
    response = proxy(key)
    assert response.status == 401 and error_code(response) == "secret_required"
    response = proxy(key, headers={"Authorization": basic(secret[:-2] + "xx")})
    assert response.status == 401 and error_code(response) == "invalid_secret"
    assert proxy(key, headers={"Authorization": basic(secret, user=key.key_id)}).status == 200


def test_rotated_secret_keeps_working_during_grace_only(proxy, make_key):
    key, old = make_key(secret_required=True)
    new = services.api_key_rotate(api_key=key, grace=timedelta(hours=1), actor="test")
    assert proxy(key, secret=old).status == 200 and proxy(key, secret=new).status == 200
    newer = services.api_key_rotate(api_key=key, grace=timedelta(0), actor="test")
    assert proxy(key, secret=new).status == 401 and proxy(key, secret=newer).status == 200


def test_access_tokens_work_until_they_expire_or_are_revoked(proxy, make_key):
    key, _ = make_key(secret_required=True)
    token_row, token = services.access_token_issue(api_key=key, ttl=1)
    bearer = {"Authorization": f"Bearer {token}"}
    assert proxy(key, headers=bearer).status == 200
    time.sleep(1.1)
    response = proxy(key, headers=bearer)  # the purge job has not run: the row is still there
    assert type(token_row).objects.filter(pk=token_row.pk).exists()
    assert response.status == 401 and error_code(response) == "token_expired"
    token_row, token = services.access_token_issue(api_key=key, ttl=60)
    assert proxy(key, headers={"Authorization": f"Bearer {token}"}).status == 200
    services.access_token_revoke(token=token_row)
    response = proxy(key, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401 and error_code(response) == "invalid_token"


def test_a_token_of_another_key_is_invalid(proxy, make_key):
    key, _ = make_key(secret_required=True)
    other, _ = make_key()
    _, token = services.access_token_issue(api_key=other, ttl=60)
    response = proxy(key, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401 and error_code(response) == "invalid_token"


def test_origin_allowlist_and_cors_headers_on_answers_and_errors(proxy, make_key):
    key, secret = make_key(allowed_origins=[APP])
    allowed = proxy(key, headers={"Origin": APP})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP  # the upstream's "*" is replaced
    assert "Vary" in allowed.headers and "origin" in allowed.headers["Vary"].lower()
    assert "X-Request-Id" in allowed.headers["Access-Control-Expose-Headers"]

    refused = proxy(key, headers={"Origin": "https://evil.test"})
    assert refused.status == 403 and error_code(refused) == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "origin" in refused.headers["Vary"].lower()

    no_origin = proxy(key)
    assert no_origin.status == 403 and error_code(no_origin) == "origin_required"
    assert proxy(key, secret=secret).status == 200

    # An error answer to an allowed origin still carries the CORS header, so the page can read it.
    services.api_key_revoke(api_key=key, actor="test")
    revoked = proxy(key, headers={"Origin": APP})
    assert revoked.status == 401 and revoked.headers["Access-Control-Allow-Origin"] == APP


def test_preflight_from_an_allowed_origin_is_204_with_cors_headers(proxy, make_key, upstream_server):
    key, _ = make_key(allowed_origins=["*.example.com"], secret_required=True)
    before = len(upstream_server.requests)
    preflight = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    response = proxy(key, "rpc", method="OPTIONS", headers=preflight)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "content-type, authorization"
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert len(upstream_server.requests) == before  # answered by the proxy itself

    refused = proxy(
        key, "rpc", method="OPTIONS", headers={**preflight, "Origin": "https://example.com.evil.test"}
    )
    assert not [name for name in refused.headers if name.lower().startswith("access-control-allow")]


def test_ip_allowlist_uses_the_peer_address_not_a_client_sent_forwarded_for(proxy, make_key):
    key, secret = make_key(allowed_ips=["10.0.0.0/8"])
    response = proxy(key, secret=secret, headers={"X-Forwarded-For": "10.1.2.3"})
    assert response.status == 403 and error_code(response) == "ip_not_allowed"
    key, secret = make_key(allowed_ips=["127.0.0.0/8"])
    assert proxy(key, secret=secret).status == 200


@override_settings(PROXY_TRUSTED_PROXIES=["127.0.0.1/32"])
def test_forwarded_for_is_believed_only_from_a_trusted_proxy(proxy, make_key):
    key, secret = make_key(allowed_ips=["10.0.0.0/8"])
    assert proxy(key, secret=secret, headers={"X-Forwarded-For": "10.1.2.3"}).status == 200
    assert proxy(key, secret=secret, headers={"X-Forwarded-For": "10.1.2.3, 8.8.8.8"}).status == 403


def test_user_agent_and_http_method_allowlists(proxy, make_key):
    key, secret = make_key(allowed_user_agents=["MyApp/*"], allowed_http_methods=["GET"])
    response = proxy(key, secret=secret, headers={"User-Agent": "curl/8.0"})
    assert response.status == 403 and error_code(response) == "user_agent_not_allowed"
    ok = {"User-Agent": "MyApp/2.1"}
    assert proxy(key, secret=secret, headers=ok).status == 200
    response = proxy(key, secret=secret, headers=ok, method="DELETE")
    assert response.status == 403 and error_code(response) == "http_method_not_allowed"


def test_json_rpc_allowlist_over_http(proxy, make_key, upstream_server):
    key, secret = make_key(allowed_rpc_methods=["eth_blockNumber"])
    good = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}).encode()
    response = proxy(key, method="POST", secret=secret, body=good)
    assert response.status == 200 and upstream_server.requests[-1].body == good
    batch = json.dumps([{"id": 1, "method": "eth_blockNumber"}, {"id": 2, "method": "eth_sendTransaction"}])
    response = proxy(key, method="POST", secret=secret, body=batch.encode())
    assert response.status == 403 and error_code(response) == "rpc_method_not_allowed"
    response = proxy(key, method="POST", secret=secret, body=b"<xml/>")
    assert response.status == 400 and error_code(response) == "invalid_rpc_request"


def test_rate_limit_answers_429_with_retry_after_and_ratelimit_fields(proxy, make_key):
    key, secret = make_key(rate_limit="3/m")
    answers = [proxy(key, secret=secret) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Policy"] == '"default";q=3;w=60'
    assert answers[0].headers["RateLimit"].startswith('"default";r=')
    assert error_code(answers[3]) == "rate_limited"
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 60


def test_requests_refused_by_an_allowlist_spend_no_quota(proxy, make_key):
    key, _ = make_key(rate_limit="3/m", allowed_origins=[APP])
    for _ in range(5):
        assert proxy(key, headers={"Origin": "https://evil.test"}).status == 403
    assert [proxy(key, headers={"Origin": APP}).status for _ in range(3)] == [200, 200, 200]


def test_daily_quota_answers_429_quota_exceeded(proxy, make_key):
    key, secret = make_key(daily_quota=2)
    answers = [proxy(key, secret=secret) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 429]
    assert error_code(answers[2]) == "quota_exceeded"
    assert int(answers[2].headers["Retry-After"]) <= 86400


def test_revocation_takes_effect_on_the_next_request(proxy, make_key):
    key, secret = make_key()
    assert proxy(key, secret=secret).status == 200
    services.api_key_revoke(api_key=key, actor="test")
    assert proxy(key, secret=secret).status == 401


def test_allowlist_change_through_a_bulk_update_takes_effect_at_once(proxy, make_key):
    key, _ = make_key()
    assert proxy(key, headers={"Origin": APP}).status == 200
    type(key).objects.filter(pk=key.pk).update(allowed_origins=["https://other.example"])
    assert proxy(key, headers={"Origin": APP}).status == 403
