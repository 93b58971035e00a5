"""Helpers the portal's tests share (plain functions; the fixtures are in conftest.py)."""


def key_form_data(**overrides) -> dict:
    """What the key create and edit forms post when a person leaves every field but the name empty."""
    return {
        "name": "web app",
        "upstreams": [],
        "allowed_origins": "",
        "allowed_ips": "",
        "allowed_user_agents": "",
        "allowed_http_methods": "",
        "allowed_rpc_methods": "",
        "rate_limit": "",
        "daily_quota": "",
        "expires_at": "",
        **overrides,
    }
