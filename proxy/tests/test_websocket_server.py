"""The WebSocket relay as production runs it: bin/serve (granian's ASGI interface, two workers), a real
client socket, and a real JSON-RPC WebSocket upstream on loopback (proxy/tests/ws_upstream.py)."""

import contextlib
import http.server
import json
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import urllib3
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from keys import services
from keys.models import Upstream, UsageRecord
from proxy.tests.relay_helpers import basic
from proxy.tests.test_processes import pytestmark as processes_marks
from proxy.tests.test_processes import serve
from proxy.tests.ws_upstream import BLOCK_NUMBER, WsUpstream

pytestmark = processes_marks

UPSTREAM_SECRET = "upstream-credential-value"  # noqa: S105 - the test upstream's own bearer credential


@pytest.fixture
def ws_upstream():
    with WsUpstream() as upstream:
        yield upstream


@pytest.fixture
def server(transactional_db):
    with serve() as served:
        yield served


@pytest.fixture
def make_key(tenant, ws_upstream):
    """make_key(**key fields) -> (slug, key, secret) on the WebSocket upstream, which wants a bearer."""
    made: dict[str, Any] = {"upstream": None}

    def make(**fields):
        if made["upstream"] is None:
            made["upstream"] = services.upstream_create(
                tenant=None,
                slug="wsnode",
                base_url=f"{ws_upstream.url}/rpc",
                allow_private_network=True,
                actor="test",
                actor_is_staff=True,
                timeout_seconds=2,
                auth_type="bearer",
                auth_value=UPSTREAM_SECRET,
            )
        key, secret = services.api_key_create(
            tenant=tenant, name="ws", upstreams=[made["upstream"]], actor="test", **fields
        )
        return "wsnode", key, secret

    return make


def ws_url(base: str, slug: str, key_id: str, path: str = "") -> str:
    return f"{base.replace('http://', 'ws://')}/proxy/{slug}/{key_id}/{path}"


def call(ws, method: str, call_id: int = 1, params: list | None = None) -> dict:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []}))
    return json.loads(ws.recv(timeout=5))


def refused(url: str, **kwargs) -> tuple[int, dict]:
    """The HTTP status and error body of a handshake that must not become a socket."""
    with pytest.raises(InvalidStatus) as refusal:
        with connect(url, open_timeout=5, **kwargs):
            pass
    response = refusal.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.body)


def closed_by_server(ws, timeout: float = 5) -> tuple[int, str, float]:
    """Wait until the server closes the socket: (code, reason, seconds waited)."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=timeout)
    assert closed.value.rcvd is not None, "closed without a close frame from the server"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.monotonic() - started


def usage_of(key) -> Counter:
    """The key's recorded usage by (outcome, code), once the server's workers flushed it."""
    counts: Counter = Counter()
    for outcome, code, count in UsageRecord.objects.filter(api_key=key).values_list(
        "outcome", "code", "count"
    ):
        counts[(outcome, code)] += count
    return counts


def test_a_call_and_a_subscription_go_through_with_the_upstreams_credential_only(
    server, make_key, ws_upstream
):
    slug, key, secret = make_key()
    url = ws_url(server, slug, key.key_id, "sub?x=1")
    with connect(url, additional_headers={"Authorization": basic(secret)}, open_timeout=5) as ws:
        assert call(ws, "eth_blockNumber") == {"jsonrpc": "2.0", "id": 1, "result": BLOCK_NUMBER}
        subscription = call(ws, "eth_subscribe", 2, ["newHeads"])["result"]
        numbers = []
        for _ in range(3):  # notifications come as the upstream sends them, unasked
            notification = json.loads(ws.recv(timeout=5))
            assert notification["params"]["subscription"] == subscription
            numbers.append(notification["params"]["result"]["number"])
        assert numbers == ["0x1", "0x2", "0x3"]
    handshake = ws_upstream.seen.handshakes[0]
    assert handshake["Authorization"] == f"Bearer {UPSTREAM_SECRET}"  # the client's secret never goes
    assert handshake["X-Forwarded-For"] == "127.0.0.1"
    assert ws_upstream.seen.paths == ["/rpc/sub?x=1"]


def test_a_browser_token_rides_in_the_subprotocol_and_only_bearer_is_echoed(server, make_key):
    slug, key, _ = make_key(secret_required=True, allowed_origins=["https://app.example"])
    token = services.access_token_issue(api_key=key, ttl=60)[1]
    url = ws_url(server, slug, key.key_id)
    browser: dict[str, Any] = {"subprotocols": ["bearer", token], "origin": "https://app.example"}
    with connect(url, open_timeout=5, **browser) as ws:
        assert ws.subprotocol == "bearer"
        assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER
    status, body = refused(url, subprotocols=["bearer", token], origin="https://evil.example")
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")


@pytest.mark.parametrize(
    ("fields", "how", "status", "code"),
    [
        ({}, "unknown_upstream", 404, "unknown_upstream"),
        ({}, "made_up_key", 401, "invalid_key"),
        ({}, "revoked", 401, "key_revoked"),
        ({"secret_required": True}, "nothing", 401, "secret_required"),
        ({}, "wrong_secret", 401, "invalid_secret"),
        ({}, "bad_token", 401, "invalid_token"),
        ({"allowed_origins": ["https://app.example"]}, "evil_origin", 403, "origin_not_allowed"),
        ({"allowed_origins": ["https://app.example"]}, "nothing", 403, "origin_required"),
        ({"allowed_ips": ["203.0.113.0/24"]}, "nothing", 403, "ip_not_allowed"),
        ({"allowed_user_agents": ["my-app/*"]}, "nothing", 403, "user_agent_not_allowed"),
        ({"allowed_http_methods": ["POST"]}, "nothing", 403, "http_method_not_allowed"),
        ({"rate_limit": "1/m"}, "second", 429, "rate_limited"),
        ({"daily_quota": 1}, "second", 429, "quota_exceeded"),
    ],
)
def test_a_refused_handshake_answers_the_contracts_http_error_never_a_101(
    server, make_key, ws_upstream, fields, how, status, code
):
    slug, key, secret = make_key(**fields)
    key_id = key.key_id
    kwargs: dict[str, object] = {}
    if how == "unknown_upstream":
        slug = "no-such-upstream"
    elif how == "made_up_key":
        key_id = "pk_" + "A" * 30
    elif how == "revoked":
        services.api_key_revoke(api_key=key, actor="test")
    elif how == "wrong_secret":
        kwargs = {"additional_headers": {"Authorization": basic("sk_" + "x" * 40)}}
    elif how == "bad_token":
        kwargs = {"subprotocols": ["bearer", "at_notatoken"]}
    elif how == "evil_origin":
        kwargs = {"origin": "https://evil.example"}
    elif how == "second":
        with connect(ws_url(server, slug, key_id), open_timeout=5):
            pass
    answered, body = refused(ws_url(server, slug, key_id), **kwargs)
    assert (answered, body["error"]["code"]) == (status, code)
    assert body["error"]["request_id"]
    assert len(ws_upstream.seen.handshakes) == (1 if how == "second" else 0)


def test_refused_messages_get_a_json_rpc_error_with_their_id_and_the_socket_stays_open(
    server, make_key, ws_upstream
):
    slug, key, _ = make_key(allowed_rpc_methods=["eth_blockNumber", "eth_chainId"])
    with connect(ws_url(server, slug, key.key_id), open_timeout=5) as ws:
        refusal = call(ws, "eth_sendRawTransaction", 7, ["0xdead"])
        assert refusal["id"] == 7 and refusal["error"]["code"] == -32002
        assert refusal["error"]["data"]["code"] == "rpc_method_not_allowed"
        assert "eth_sendRawTransaction" in refusal["error"]["message"]
        batch = [
            {"jsonrpc": "2.0", "id": 8, "method": "eth_blockNumber"},
            {"jsonrpc": "2.0", "id": "nine", "method": "eth_accounts"},
        ]
        ws.send(json.dumps(batch))
        answers = json.loads(ws.recv(timeout=5))
        assert [answer["id"] for answer in answers] == [8, "nine"]
        assert {answer["error"]["data"]["code"] for answer in answers} == {"rpc_method_not_allowed"}
        ws.send("not json")
        assert json.loads(ws.recv(timeout=5))["error"]["data"]["code"] == "invalid_rpc_request"
        assert call(ws, "eth_blockNumber", 10) == {"jsonrpc": "2.0", "id": 10, "result": BLOCK_NUMBER}
    assert [json.loads(message)["id"] for message in ws_upstream.seen.messages] == [10]


def test_the_rate_limit_is_spent_per_message(server, make_key, ws_upstream):
    slug, key, _ = make_key(rate_limit="4/m")
    with connect(ws_url(server, slug, key.key_id), open_timeout=5) as ws:  # the handshake: 1 of 4
        assert [call(ws, "eth_blockNumber", n).get("result") for n in (1, 2, 3)] == [BLOCK_NUMBER] * 3
        refusal = call(ws, "eth_blockNumber", 4)
        assert refusal["id"] == 4 and refusal["error"]["code"] == -32005
        assert refusal["error"]["data"]["code"] == "rate_limited"
        assert 0 < refusal["error"]["data"]["retry_after"] <= 60
    assert len(ws_upstream.seen.messages) == 3


def test_a_message_over_the_size_limit_is_refused_and_never_reaches_the_upstream(
    transactional_db, make_key, ws_upstream
):
    slug, key, _ = make_key()
    with serve(PROXY_WS_MAX_MESSAGE_BYTES="1000") as served:
        with connect(ws_url(served, slug, key.key_id), open_timeout=5) as ws:
            big = {"jsonrpc": "2.0", "id": 3, "method": "eth_call", "params": ["é" * 600]}  # 1,200+ bytes
            ws.send(json.dumps(big, ensure_ascii=False))
            refusal = json.loads(ws.recv(timeout=5))
            assert refusal["id"] == 3 and refusal["error"]["data"]["code"] == "payload_too_large"
            assert call(ws, "eth_blockNumber", 4)["result"] == BLOCK_NUMBER
    assert [json.loads(message)["id"] for message in ws_upstream.seen.messages] == [4]


@pytest.mark.parametrize("change", ["revoke", "suspend", "expire", "rotate_without_grace", "token_revoked"])
def test_an_open_socket_closes_within_a_second_once_its_key_may_no_longer_be_used(
    server, make_key, tenant, change
):
    slug, key, secret = make_key()
    kwargs: dict = {"additional_headers": {"Authorization": basic(secret)}}
    if change == "token_revoked":
        token_row, token = services.access_token_issue(api_key=key, ttl=60)
        kwargs = {"subprotocols": ["bearer", token]}
    with connect(ws_url(server, slug, key.key_id), open_timeout=5, **kwargs) as ws:
        assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER
        started = time.monotonic()
        if change == "revoke":
            services.api_key_revoke(api_key=key, actor="test")
        elif change == "suspend":
            services.tenant_set_active(tenant=tenant, is_active=False, actor="test")
        elif change == "expire":
            from django.utils import timezone

            services.api_key_update(
                api_key=key, actor="test", expires_at=timezone.now() + timedelta(seconds=1)
            )
            started = time.monotonic() + 1  # it expires a second from now
        elif change == "rotate_without_grace":
            services.api_key_rotate(api_key=key, actor="test", grace=timedelta(0))
        else:
            services.access_token_revoke(token=token_row, actor="test")
        code, reason, _ = closed_by_server(ws)
        waited = time.monotonic() - started
    expected = {
        "revoke": (4401, "key_revoked"),
        "suspend": (4403, "tenant_suspended"),
        "expire": (4401, "key_expired"),
        "rotate_without_grace": (4401, "invalid_secret"),
        "token_revoked": (4401, "invalid_token"),
    }[change]
    assert (code, reason) == expected
    assert waited < 1.0, f"closed {waited:.2f} s after the change"


def test_an_open_socket_closes_within_a_second_once_its_upstream_moves(server, make_key):
    slug, key, secret = make_key()
    headers = {"Authorization": basic(secret)}
    with connect(ws_url(server, slug, key.key_id), open_timeout=5, additional_headers=headers) as ws:
        assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER
        started = time.monotonic()
        # Staff point the upstream elsewhere: the open socket still reaches the old place, so it goes
        # (a new handshake would connect to the new one).
        upstream = Upstream.objects.get(slug=slug)
        moved = (
            upstream.base_url.replace("/rpc", "/v2/rpc")
            if "/rpc" in upstream.base_url
            else upstream.base_url + "/v2"
        )
        services.upstream_update(upstream=upstream, actor="test", actor_is_staff=True, base_url=moved)
        code, reason, _ = closed_by_server(ws)
        waited = time.monotonic() - started
    assert (code, reason) == (1012, "upstream_changed")
    assert waited < 1.0, f"closed {waited:.2f} s after the change"


def test_usage_counts_every_message_by_outcome_and_reason(server, make_key):
    slug, key, _ = make_key(allowed_rpc_methods=["eth_blockNumber"])
    with connect(ws_url(server, slug, key.key_id), open_timeout=5) as ws:
        for n in range(7):
            assert call(ws, "eth_blockNumber", n)["result"] == BLOCK_NUMBER
        for n in range(3):
            assert "error" in call(ws, "eth_getLogs", 100 + n)
    # 8 allowed: the 7 calls and the handshake.
    expected = Counter({("allowed", ""): 8, ("rejected", "rpc_method_not_allowed"): 3})
    for _ in range(50):  # the workers flush every second
        if usage_of(key) == expected:
            break
        time.sleep(0.2)
    assert usage_of(key) == expected
    metrics = urllib3.PoolManager().request("GET", f"{server}/metrics").data.decode()
    assert 'proxy_websocket_messages_total{outcome="allowed"} 7.0' in metrics
    assert 'proxy_websocket_messages_total{outcome="rejected"} 3.0' in metrics


def test_the_upstreams_close_code_and_reason_reach_the_client(server, make_key):
    slug, key, _ = make_key()
    with connect(ws_url(server, slug, key.key_id), open_timeout=5) as ws:
        ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "test_close", "params": [4321, "node restarting"]}
            )
        )
        code, reason, _ = closed_by_server(ws)
    assert (code, reason) == (4321, "node restarting")


def test_an_upstream_with_its_own_websocket_url_is_reached_there(server, tenant, ws_upstream):
    upstream = services.upstream_create(
        tenant=None,
        slug="infura-like",
        base_url="http://127.0.0.1:9/v3",  # HTTP calls go here; nothing listens
        websocket_url=f"ws://127.0.0.1:{ws_upstream.port}/ws/v3",
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
        timeout_seconds=2,
        auth_type="query",
        auth_name="apiKey",
        auth_value=UPSTREAM_SECRET,
    )
    key, _ = services.api_key_create(tenant=tenant, name="ws", upstreams=[upstream], actor="test")
    with connect(ws_url(server, "infura-like", key.key_id, "x"), open_timeout=5) as ws:
        assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER
    assert ws_upstream.seen.paths == [f"/ws/v3/x?apiKey={UPSTREAM_SECRET}"]  # the credential added
    assert ws_upstream.seen.handshakes[0]["Host"] == f"127.0.0.1:{ws_upstream.port}"


def _key_on_staff_upstream(tenant, slug: str, base_url: str, timeout: int):
    """A key of `tenant` on a global upstream at `base_url` that staff allowed on a private network."""
    upstream = services.upstream_create(
        tenant=None,
        slug=slug,
        base_url=base_url,
        allow_private_network=True,
        actor="test",
        actor_is_staff=True,
        timeout_seconds=timeout,
    )
    key, _ = services.api_key_create(tenant=tenant, name="ws", upstreams=[upstream], actor="test")
    return key


def test_an_upstream_that_refuses_the_handshake_is_502_to_the_client(server, tenant):
    key = _key_on_staff_upstream(tenant, "closed-port", "http://127.0.0.1:9/rpc", 2)  # nothing listens
    status, body = refused(ws_url(server, "closed-port", key.key_id))
    assert (status, body["error"]["code"]) == (502, "upstream_unreachable")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An HTTP server that answers every request with a redirect to `location` (when set), else 200,
    and records the paths it was asked for."""

    location: str | None = None
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).seen.append(self.path)
        self.send_response(302 if self.location else 200)
        if self.location:
            self.send_header("Location", self.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _recording_server(location: str | None) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Recorder,), {"location": location, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_an_upstream_that_redirects_the_handshake_is_502_and_the_redirect_never_followed(server, tenant):
    # The redirect's target was never checked against the SSRF rule (here: some internal service).
    target = _recording_server(None)
    redirecting = _recording_server(f"http://127.0.0.1:{target.server_port}/latest/meta-data/")
    try:
        key = _key_on_staff_upstream(
            tenant, "redirecting", f"http://127.0.0.1:{redirecting.server_port}/rpc", 5
        )
        status, body = refused(ws_url(server, "redirecting", key.key_id))
        assert (status, body["error"]["code"]) == (502, "upstream_unreachable")
        assert len(redirecting.RequestHandlerClass.seen) == 1  # type: ignore[attr-defined]
        assert target.RequestHandlerClass.seen == []  # type: ignore[attr-defined]
    finally:
        for httpd in (redirecting, target):
            httpd.shutdown()
            httpd.server_close()


def test_an_upstream_on_a_private_address_is_refused_at_connect(server, make_key, ws_upstream):
    slug, key, _ = make_key()
    # The SSRF rule holds at connect time too: an upstream no longer allowed on a private network, whose
    # host is loopback, is never connected to.
    Upstream.objects.filter(slug=slug).update(allow_private_network=False)
    status, body = refused(ws_url(server, slug, key.key_id))
    assert (status, body["error"]["code"]) == (502, "upstream_unreachable")
    assert "non-public address" in body["error"]["message"]
    assert ws_upstream.seen.handshakes == []


def test_the_per_key_cap_refuses_one_socket_more_across_workers_and_frees_on_close(
    transactional_db, make_key
):
    slug, key, _ = make_key()
    with serve(PROXY_WS_MAX_CONNECTIONS_PER_KEY="3") as served:
        url = ws_url(served, slug, key.key_id)
        with contextlib.ExitStack() as sockets:
            for _ in range(3):  # spread over both workers
                sockets.enter_context(connect(url, open_timeout=5))
            status, body = refused(url)
            assert (status, body["error"]["code"]) == (429, "too_many_connections")
        time.sleep(0.5)
        with connect(url, open_timeout=5) as ws:
            assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER


def test_an_idle_socket_is_closed(transactional_db, make_key):
    slug, key, _ = make_key()
    with serve(PROXY_WS_IDLE_SECONDS="1") as served:
        with connect(ws_url(served, slug, key.key_id), open_timeout=5) as ws:
            code, reason, waited = closed_by_server(ws)
    assert (code, reason) == (4408, "idle_timeout") and waited < 3


def test_a_websocket_on_a_site_path_is_404(server):
    status, body = refused(server.replace("http://", "ws://") + "/portal/keys")
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_an_upstream_that_answers_no_ping_is_closed_with_1014(transactional_db, tenant):
    with WsUpstream(answers_pings=False) as hung:
        upstream = services.upstream_create(
            tenant=None,
            slug="hung",
            base_url=hung.url,
            allow_private_network=True,
            actor="test",
            actor_is_staff=True,
        )
        key, _ = services.api_key_create(tenant=tenant, name="ws", upstreams=[upstream], actor="test")
        with serve(PROXY_WS_PING_SECONDS="1") as served:
            with connect(ws_url(served, "hung", key.key_id), open_timeout=5) as ws:
                assert call(ws, "eth_blockNumber")["result"] == BLOCK_NUMBER
                code, reason, waited = closed_by_server(ws)
    assert (code, reason) == (1014, "upstream_timeout") and waited < 4
