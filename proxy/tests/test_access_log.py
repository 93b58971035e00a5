"""Log lines through the real server: JSON access lines with the request's facts and never a secret;
W3C traceparent kept, replaced or created, and sent upstream under the same trace id."""

import base64
import http.cookies
import json
import logging
import re
import time
from types import SimpleNamespace
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.http import HttpResponse

from keys import services
from keys.log_context import RequestIdFilter, json_formatter
from keys.middleware import RequestIdMiddleware
from keys.models import Role
from proxy.tests.relay_helpers import UPSTREAM_CREDENTIAL, basic

pytestmark = pytest.mark.usefixtures("fresh_rate_limits")

QUERY_CREDENTIAL = "query-credential-9f3a7c"
HEADER_CREDENTIAL = "header-credential-4b8e2d"
PASSWORD = "portal-password-7d1c5e"
WRONG_PASSWORD = "wrong-password-0a6b3f"
ACCESS_FIELDS = {"request_id", "key", "upstream", "status", "code", "duration_ms", "trace_id"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Captured(logging.Handler):
    """Every record, formatted by the production JSON formatter (settings.LOGGING's), with the filter
    that adds the request id."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        assert "keys.log_context.json_formatter" in str(django_settings.LOGGING)  # what production uses
        self.setFormatter(json_formatter())
        self.addFilter(RequestIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def access(self) -> list[dict]:
        return [line for line in map(json.loads, self.lines) if line["logger"] == "proxy.access"]


@pytest.fixture
def captured():
    """Every log record of the test, at every level (so DEBUG lines are proven clean too)."""
    handler, root = Captured(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def wait_for_access_lines(captured: Captured, count: int) -> list[dict]:
    """A streamed answer's line is written when the server closes it, just after the client has read it."""
    deadline = time.monotonic() + 5
    while len(captured.access()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return captured.access()


def cookie_of(answer, name: str) -> str:
    jar = http.cookies.SimpleCookie()
    for line in answer.headers.getlist("Set-Cookie"):
        jar.load(line)
    return jar[name].value


def portal_login(site, pool, username: str, password: str):
    login = f"{site.url}/portal/login"
    page = pool.request("GET", login, redirect=False)
    token = cookie_of(page, "csrftoken")
    return pool.request(
        "POST",
        login,
        body=urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={token}"},
        redirect=False,
    )


def test_no_secret_in_any_log_line_and_access_lines_are_json(
    site, pool, proxy, tenant, echo, local_upstream, upstream_server, captured
):
    for slug, auth in [
        ("q", {"auth_type": "query", "auth_name": "api_key", "auth_value": QUERY_CREDENTIAL}),
        ("h", {"auth_type": "header", "auth_name": "X-Api-Key", "auth_value": HEADER_CREDENTIAL}),
        ("stream", {"auth_type": "bearer", "auth_value": UPSTREAM_CREDENTIAL}),
    ]:
        base = upstream_server.url + ("/stream" if slug == "stream" else "/echo")
        local_upstream(slug, base, **auth)
    management = services.management_token_create(tenant=tenant, name="ci", actor="test")[1]
    user = get_user_model().objects.create_user(username="ops@acme.example", password=PASSWORD)
    services.membership_set(tenant=tenant, user=user, role=Role.ADMIN, actor="test")
    api = {"Authorization": f"Bearer {management}", "Content-Type": "application/json"}

    def api_post(path: str, data: dict, headers=api):
        return pool.request("POST", f"{site.url}/api/v1/{path}", body=json.dumps(data), headers=headers)

    created = api_post(
        "keys",
        {"name": "web", "upstreams": ["echo", "q", "h", "stream"], "allowed_origins": ["https://app.test"]},
    )
    assert created.status == 201
    key_id, first_secret = created.json()["id"], created.json()["secret"]
    rotated = api_post(f"keys/{key_id}/rotate", {"grace_seconds": 3600})
    assert rotated.status == 200
    secret = rotated.json()["secret"]
    exchange = {"Authorization": basic(secret, key_id), "Content-Type": "application/json"}
    exchanged = api_post("tokens", {"ttl": 300}, headers=exchange)
    assert exchanged.status == 201
    token = exchanged.json()["token"]
    wrong_secret = "sk_" + "A" * 38
    assert api_post("tokens", {"ttl": 300}, headers={**exchange, "Authorization": basic(wrong_secret)}).status

    key = SimpleNamespace(key_id=key_id)
    calls = [
        (proxy(key, "a/b?client_param=visible-value", secret=secret), 200),
        (proxy(key, "old", secret=first_secret), 200),  # the rotation's grace
        (proxy(key, "t", headers={"Authorization": f"Bearer {token}"}), 200),
        (proxy(key, "?x=1", secret=secret, upstream="q"), 200),
        (proxy(key, "hdr", secret=secret, upstream="h"), 200),
        (proxy(key, "?chunks=3&size=100", secret=secret, upstream="stream"), 200),
        (proxy(key, "w", secret=wrong_secret), 401),
        (proxy(key, "o", headers={"Origin": "https://evil.test"}), 403),
        (proxy(key, "c", headers={"Cookie": "session=cookie-value-5e9d"}, secret=secret), 200),
    ]
    assert [answer.status for answer, _ in calls] == [status for _, status in calls]
    upstream_saw = calls[3][0].json()
    assert QUERY_CREDENTIAL in upstream_saw["query"]  # the credential did travel, so its absence counts
    assert portal_login(site, pool, "ops@acme.example", WRONG_PASSWORD).status == 200
    assert portal_login(site, pool, "ops@acme.example", PASSWORD).status == 302

    access = wait_for_access_lines(captured, len(calls))
    secrets = [
        first_secret,
        secret,
        wrong_secret,
        token,
        management,
        PASSWORD,
        WRONG_PASSWORD,
        UPSTREAM_CREDENTIAL,
        QUERY_CREDENTIAL,
        HEADER_CREDENTIAL,
        "cookie-value-5e9d",
        "visible-value",  # a query value: the query may carry a credential, so none is logged
    ]
    forms = {form for value in secrets for form in (value, quote(value, safe=""), json.dumps(value)[1:-1])}
    forms |= {
        base64.b64encode(f"{user}:{value}".encode()).decode() for value in secrets for user in ("", key_id)
    }
    assert captured.lines
    for line in captured.lines:
        assert not [form for form in forms if form in line], line
        assert not re.search(r"\b(sk|at|mt)_[0-9A-Za-z]{38}\b", line), line

    assert len(access) == len(calls)
    for line, (answer, status) in zip(access, calls, strict=True):
        assert ACCESS_FIELDS <= line.keys()
        assert line["request_id"] == answer.headers["X-Request-Id"]
        assert (line["key"], line["tenant"], line["status"]) == (key_id, tenant.pk, status)
        assert line["duration_ms"] >= 0 and re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
    assert [line["upstream"] for line in access[3:6]] == ["q", "h", "stream"]
    assert [line["code"] for line in access] == [None] * 6 + ["invalid_secret", "origin_not_allowed", None]
    assert access[0]["path"] == f"/proxy/echo/{key_id}/a/b"


def test_site_log_lines_carry_the_request_id(rf, captured):
    logger = logging.getLogger("keys.tests.site_line")

    def view(request):
        logger.warning("inside the request")
        return HttpResponse()

    answer = RequestIdMiddleware(view)(rf.get("/", HTTP_X_REQUEST_ID="site-request-0001"))
    logger.warning("outside any request")
    inside, outside = (json.loads(line) for line in captured.lines[-2:])
    assert answer["X-Request-Id"] == inside["request_id"] == "site-request-0001"
    assert inside["level"] == "WARNING" and inside["message"] == "inside the request"
    assert outside["request_id"] is None


def test_a_proxied_calls_other_log_lines_carry_its_key_and_tenant_once_the_key_is_known(captured):
    from keys.log_context import bind_request_id, unbind_request_id
    from proxy import access_log
    from proxy.tests.test_checks import make_key

    logger = logging.getLogger("proxy.tests.relay_line")
    bound = bind_request_id("relay-request-0001")
    logger.warning("before the key is found")
    access_log.note_key(make_key(key_id="pk_logged", tenant_id=42))  # what the relay calls
    logger.warning("while relaying")
    unbind_request_id(bound)
    logger.warning("after the call")
    before, during, after = (json.loads(line) for line in captured.lines[-3:])
    assert "key" not in before and before["request_id"] == "relay-request-0001"
    assert (during["key"], during["tenant"], during["request_id"]) == ("pk_logged", 42, "relay-request-0001")
    assert "key" not in after and after["request_id"] is None


def test_access_log_off_writes_no_line(proxy, make_key, captured, settings):
    settings.PROXY_ACCESS_LOG = False
    key, _ = make_key()
    assert proxy(key).status == 200
    assert captured.access() == []


def test_sampled_out_access_lines_still_write_server_errors(proxy, make_key, captured, settings):
    settings.PROXY_ACCESS_LOG_SAMPLE = 0.0
    key, _ = make_key()
    assert proxy(key).status == 200
    assert proxy(key, upstream="missing").status == 404
    assert captured.access() == []


def test_streamed_answer_closed_early_still_writes_its_line(
    site, pool, make_key, local_upstream, upstream_server, captured
):
    stream = local_upstream("stream", f"{upstream_server.url}/stream")
    key, _ = make_key(upstreams=[stream])
    url = f"{site.url}/proxy/stream/{key.key_id}/?chunks=50&size=1000&delay=0.05"
    answer = pool.request("GET", url, preload_content=False)
    assert answer.status == 200
    answer.read(100)
    answer.release_conn()
    answer.close()  # the client leaves mid-stream
    [line] = wait_for_access_lines(captured, 1)
    assert (line["upstream"], line["status"], line["code"]) == ("stream", 200, None)


# --- W3C trace context -----------------------------------------------------------------------------


def upstream_trace(answer) -> tuple[str, str | None]:
    headers = answer.json()["headers"]
    return headers["traceparent"], headers.get("tracestate")


def test_valid_traceparent_keeps_its_trace_id_under_a_new_parent_id(proxy, make_key, captured):
    key, _ = make_key()
    sent = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=abc,other=1"}
    answer = proxy(key, headers=sent)
    traceparent, tracestate = upstream_trace(answer)
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, flags, tracestate) == ("00", TRACE_ID, "01", "vendor=abc,other=1")
    assert re.fullmatch(r"[0-9a-f]{16}", parent_id) and parent_id not in (PARENT_ID, "0" * 16)
    assert wait_for_access_lines(captured, 1)[0]["trace_id"] == TRACE_ID


@pytest.mark.parametrize(
    "traceparent",
    [
        f"01-{TRACE_ID}-{PARENT_ID}-01",  # another version
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # hex is lowercase
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f"00-{TRACE_ID}-{PARENT_ID}-0g",
        "garbage",
    ],
)
def test_invalid_traceparent_is_replaced_and_its_tracestate_dropped(proxy, make_key, captured, traceparent):
    key, _ = make_key()
    answer = proxy(key, headers={"traceparent": traceparent, "tracestate": "vendor=abc"})
    sent, tracestate = upstream_trace(answer)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", sent) and TRACE_ID not in sent
    assert tracestate is None
    assert wait_for_access_lines(captured, 1)[0]["trace_id"] == sent.split("-")[1]


def test_request_without_traceparent_starts_a_trace(proxy, make_key, captured):
    key, _ = make_key()
    sent, tracestate = upstream_trace(proxy(key, headers={"tracestate": "vendor=abc"}))
    trace_id = sent.split("-")[1]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", sent) and trace_id != "0" * 32
    assert tracestate is None
    assert wait_for_access_lines(captured, 1)[0]["trace_id"] == trace_id
