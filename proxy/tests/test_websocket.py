"""The WebSocket relay's pure parts: the token subprotocol, the per-message checks and their JSON-RPC
error answers (the relay through a real server: test_websocket_server.py)."""

import json

import pytest
from django.test import override_settings

from proxy import websocket
from proxy.checks import reject
from proxy.policy import KeyPolicy
from proxy.websocket_registry import close_code_for


def key_policy(**fields) -> KeyPolicy:
    values: dict = {
        "key_id": "pk_test",
        "tenant_id": 1,
        "tenant_active": True,
        "secret_hash": "",
        "previous_secret_hash": "",
        "previous_secret_until": None,
        "secret_required": False,
        "origins": (),
        "networks": (),
        "user_agents": (),
        "http_methods": frozenset(),
        "rpc_methods": frozenset(),
        "rate": None,
        "daily_quota": None,
        "expires_at": None,
        "revoked_at": None,
        "upstreams": frozenset({"node"}),
    }
    values.update(fields)
    return KeyPolicy(**values)


@pytest.mark.parametrize(
    ("offered", "token", "others"),
    [
        ([], None, []),
        (["graphql-ws"], None, ["graphql-ws"]),
        (["bearer", "at_x"], "at_x", []),
        (["json", "bearer", "at_x", "v2"], "at_x", ["json", "v2"]),
        (["bearer"], "", []),  # no token after it: refused as an invalid token by the checks
    ],
)
def test_the_token_is_the_subprotocol_after_bearer(offered, token, others):
    assert websocket.offered_token(offered) == (token, others)


def test_a_refused_call_is_answered_with_its_id_and_the_contracts_code():
    rejection = reject("rate_limited", "over", 17, check="rate_limit")
    answer = json.loads(
        websocket.rpc_error_reply('{"jsonrpc":"2.0","id":"a1","method":"eth_call"}', rejection, "rid")
    )
    assert answer == {
        "jsonrpc": "2.0",
        "id": "a1",
        "error": {
            "code": -32005,
            "message": "over",
            "data": {"code": "rate_limited", "request_id": "rid", "retry_after": 17},
        },
    }


@pytest.mark.parametrize(
    ("message", "ids"),
    [
        ('[{"id":1,"method":"a"},{"method":"b"},{"id":3,"method":"c"}]', [1, None, 3]),
        ("not json", None),
        ("[]", None),
        (b'{"id": 9, "method": "x"}', 9),
    ],
)
def test_a_batch_gets_one_error_per_call_and_what_is_not_json_rpc_gets_id_null(message, ids):
    answer = json.loads(websocket.rpc_error_reply(message, reject("invalid_rpc_request", "no"), "rid"))
    if isinstance(ids, list):
        assert [item["id"] for item in answer] == ids
        assert {item["error"]["code"] for item in answer} == {-32600}
    else:
        assert answer["id"] == ids


def test_a_refused_batch_of_many_calls_gets_one_error_not_one_per_call():
    # A message of 10,000 tiny calls must not make the proxy build and send 10,000 error objects.
    message = json.dumps([{"jsonrpc": "2.0", "id": n, "method": "x"} for n in range(10_000)])
    answer = json.loads(websocket.rpc_error_reply(message, reject("rate_limited", "slow down"), "rid"))
    assert isinstance(answer, dict) and answer["id"] is None and answer["error"]["code"] == -32005
    small = json.dumps(
        [{"jsonrpc": "2.0", "id": n, "method": "x"} for n in range(websocket.BATCH_REPLIES_MAX)]
    )
    assert len(json.loads(websocket.rpc_error_reply(small, reject("rate_limited", "no"), "rid"))) == 100


def test_message_checks_in_order_size_then_methods():
    key = key_policy(rpc_methods=frozenset({"eth_blockNumber"}))
    with override_settings(PROXY_WS_MAX_MESSAGE_BYTES=60):
        too_big = websocket.message_refusal(key, '{"method":"eth_blockNumber","p":"' + "é" * 20 + '"}', 0)
        assert too_big is not None and too_big.code == "payload_too_large"  # 75 bytes, 55 characters
        assert websocket.message_refusal(key, '{"method":"eth_blockNumber"}', 0) is None
        refused = websocket.message_refusal(key, '[{"method":"eth_blockNumber"},{"method":"eth_sign"}]', 0)
        assert refused is not None and (refused.code, refused.detail) == (
            "rpc_method_not_allowed",
            "eth_sign",
        )
        invalid = websocket.message_refusal(key, b"\xff\xfe", 0)
        assert invalid is not None and invalid.code == "invalid_rpc_request"


def test_a_report_only_method_check_lets_the_message_through():
    key = key_policy(
        rpc_methods=frozenset({"eth_blockNumber"}), report_only=frozenset({"allowed_rpc_methods"})
    )
    assert websocket.message_refusal(key, '{"method":"eth_sign"}', 0) is None


def test_close_codes_are_4000_plus_the_handshakes_status():
    assert close_code_for(reject("key_revoked", "x").status) == 4401
    assert close_code_for(reject("tenant_suspended", "x").status) == 4403
