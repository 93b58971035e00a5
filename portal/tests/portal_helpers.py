"""Helpers the portal's tests share (plain functions; the fixtures are in conftest.py)."""

import re


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


def found(pattern: str | re.Pattern[str], text: str, group: int = 0) -> str:
    """The `group` of the first match of `pattern` in `text`; the test fails when nothing matches."""
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not found"
    return match.group(group)
