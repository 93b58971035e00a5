"""Report-only checks through the relay: a would-be refusal passes, says so in X-Would-Reject, and is
counted with its reason and detail; rows 1-5 and 9 of the check table are never relaxed."""

import dataclasses
import json

import pytest

from keys import services
from proxy import report
from proxy.checks import reject
from proxy.policy import build_key_policy
from proxy.sharing import sharing
from proxy.usage import usage

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "https://evil.test"


def _would(key_id):
    return {
        (code, detail): count
        for (_, kid, outcome, code, detail), count in usage.pending().items()
        if kid == key_id and outcome == "would_reject"
    }


def test_a_report_mode_origin_check_passes_an_unlisted_origin_and_says_why(proxy, make_key, upstream_server):
    key, _ = make_key(allowed_origins=["https://app.example.com"], report_only=["allowed_origins"])
    answer = proxy(key, "x", headers={"Origin": ORIGIN})
    assert answer.status == 200
    assert answer.headers["X-Would-Reject"] == "origin_not_allowed"
    # The app keeps working in the browser while its origins are learnt: granted, and the header readable.
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Would-Reject" in answer.headers["Access-Control-Expose-Headers"]
    assert len(upstream_server.requests) == 1
    assert _would(key.key_id) == {("origin_not_allowed", ORIGIN): 1}


def test_an_allowed_origin_in_report_mode_has_no_header(proxy, make_key):
    key, _ = make_key(allowed_origins=["https://app.example.com"], report_only=["allowed_origins"])
    answer = proxy(key, "x", headers={"Origin": "https://app.example.com"})
    assert answer.status == 200
    assert "X-Would-Reject" not in answer.headers
    assert _would(key.key_id) == {}


def test_the_same_origin_in_enforce_mode_is_refused(proxy, make_key, upstream_server):
    key, _ = make_key(allowed_origins=["https://app.example.com"])
    answer = proxy(key, "x", headers={"Origin": ORIGIN})
    assert answer.status == 403
    assert json.loads(answer.data)["error"]["code"] == "origin_not_allowed"
    assert "X-Would-Reject" not in answer.headers
    assert len(upstream_server.requests) == 0


def test_report_mode_never_relaxes_secret_required(proxy, make_key, upstream_server):
    key, _ = make_key(
        allowed_origins=["https://app.example.com"], secret_required=True, report_only=list(report_all())
    )
    answer = proxy(key, "x", headers={"Origin": ORIGIN})
    assert answer.status == 401
    assert json.loads(answer.data)["error"]["code"] == "secret_required"
    assert len(upstream_server.requests) == 0


def report_all():
    from keys.validators import REPORT_ONLY_CHECKS

    return REPORT_ONLY_CHECKS


def test_report_mode_never_relaxes_a_tokens_own_origins(proxy, make_key, upstream_server):
    key, _ = make_key(allowed_origins=["*.example.com"], report_only=["allowed_origins"])
    _, token = services.access_token_issue(api_key=key, ttl=60, allowed_origins=["https://a.example.com"])
    answer = proxy(key, "x", headers={"Origin": "https://b.example.com", "Authorization": f"Bearer {token}"})
    assert answer.status == 403
    assert len(upstream_server.requests) == 0


def test_several_report_mode_checks_each_count_and_an_enforced_one_still_refuses(proxy, make_key):
    key, secret = make_key(
        allowed_ips=["203.0.113.0/24"],
        allowed_user_agents=["good/*"],
        allowed_http_methods=["POST"],
        report_only=["allowed_ips", "allowed_user_agents"],
    )
    answer = proxy(key, "x", headers={"User-Agent": "curl/8"}, method="POST")
    assert answer.status == 200
    assert answer.headers["X-Would-Reject"] == "ip_not_allowed, user_agent_not_allowed"
    assert _would(key.key_id) == {("ip_not_allowed", "127.0.0.1"): 1, ("user_agent_not_allowed", "curl/8"): 1}
    refused = proxy(key, "x", headers={"User-Agent": "curl/8"}, method="GET")  # methods still enforce
    assert refused.status == 403
    assert json.loads(refused.data)["error"]["code"] == "http_method_not_allowed"
    assert refused.headers["X-Would-Reject"] == "ip_not_allowed, user_agent_not_allowed"
    assert _would(key.key_id)[("ip_not_allowed", "127.0.0.1")] == 1  # a refused request counts no would-be


def test_a_report_mode_json_rpc_allowlist_passes_other_methods_but_not_a_malformed_body(proxy, make_key):
    key, _ = make_key(allowed_rpc_methods=["eth_blockNumber"], report_only=["allowed_rpc_methods"])
    body = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction"}])
    answer = proxy(key, "", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert answer.status == 200
    assert answer.headers["X-Would-Reject"] == "rpc_method_not_allowed"
    assert _would(key.key_id) == {("rpc_method_not_allowed", "eth_sendRawTransaction"): 1}
    malformed = proxy(key, "", method="POST", body=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status == 400  # row 9: never relaxed


def test_a_report_mode_rate_limit_passes_and_the_quota_is_still_checked_after_it(proxy, make_key):
    key, _ = make_key(rate_limit="1/m", daily_quota=2, report_only=["rate_limit"])
    assert proxy(key, "x").status == 200
    second = proxy(key, "x")
    assert second.status == 200
    assert second.headers["X-Would-Reject"] == "rate_limited"
    third = proxy(key, "x")  # the quota enforces
    assert third.status == 429
    assert json.loads(third.data)["error"]["code"] == "quota_exceeded"


def test_a_report_mode_quota_passes(proxy, make_key):
    key, _ = make_key(daily_quota=1, report_only=["daily_quota"])
    assert proxy(key, "x").status == 200
    answer = proxy(key, "x")
    assert answer.status == 200
    assert answer.headers["X-Would-Reject"] == "quota_exceeded"


def test_path_rules_are_never_relaxed(proxy, make_key):
    key, _ = make_key(allowed_origins=["https://app.example.com"], report_only=list(report_all()))
    answer = proxy(key, "a/%2e%2e/%2e%2e/etc", headers={"Origin": ORIGIN})
    assert answer.status == 400


def test_a_relayed_request_is_noted_for_the_sharing_sketches(proxy, make_key):
    sharing.discard_pending()
    key, _ = make_key()
    proxy(key, "x", headers={"Origin": "https://a.test", "User-Agent": "ua/1"})
    pending = {call[2:]: count for call, count in sharing.pending().items() if call[1] == key.key_id}
    assert pending == {("127.0.0.1", "https://a.test", "ua/1"): 1}


# --- the pure contract (proxy/report.py) -----------------------------------------------------------


def test_enforced_returns_the_first_enforced_refusal_and_collects_the_reported_ones_before_it(api_key):
    key = build_key_policy(api_key, [])
    key = dataclasses.replace(key, report_only=frozenset({"allowed_ips"}))
    ip = reject("ip_not_allowed", "no", detail="1.2.3.4", check="allowed_ips")
    ua = reject("user_agent_not_allowed", "no", detail="x", check="allowed_user_agents")
    secret = reject("secret_required", "no")
    reported: list = []
    assert report.enforced(key, reported, None, ip, ua) is ua
    assert reported == [ip]
    assert report.enforced(key, [], secret) is secret  # no `check`: never reported only
    assert report.would_reject_headers(reported) == {"X-Would-Reject": "ip_not_allowed"}
    assert report.would_reject_headers([]) == {}
    counted = []
    report.count_would_reject(lambda *args: counted.append(args), "pk_x", [ip, ip])
    assert counted == [("pk_x", "would_reject", "ip_not_allowed", "1.2.3.4")] * 2


def test_a_preflight_from_an_unlisted_origin_is_granted_while_origins_report(proxy, make_key):
    key, _ = make_key(allowed_origins=["https://app.example.com"], report_only=["allowed_origins"])
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    answer = proxy(key, "", method="OPTIONS", headers=headers)
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert _would(key.key_id) == {}  # the call that follows is what counts
    enforced, _ = make_key(allowed_origins=["https://app.example.com"])
    assert proxy(enforced, "", method="OPTIONS", headers=headers).status == 403
