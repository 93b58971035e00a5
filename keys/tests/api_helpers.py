"""Helpers the management-API tests share (plain functions; the fixtures are in conftest.py)."""

import base64

DESIGN_KEY_FIELDS = {
    "id",
    "name",
    "upstreams",
    "secret_required",
    "report_only",
    "allowed_origins",
    "allowed_ips",
    "allowed_user_agents",
    "allowed_http_methods",
    "allowed_rpc_methods",
    "rate_limit",
    "daily_quota",
    "expires_at",
    "revoked_at",
    "created_at",
    "last_used_at",
}


def error_of(response, status: int, code: str) -> dict:
    """The error of a contract error body, after checking its status, code, type and request id."""
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    assert error["request_id"] == response["X-Request-Id"]
    return error


def basic(key_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()
