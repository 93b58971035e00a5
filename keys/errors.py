"""The contract's error body (DESIGN.md "Error body"), shared by the proxy and the management API."""

import json

# Every error code of DESIGN.md, with the status it answers. A code not listed here is a bug.
ERROR_STATUS = {
    "unknown_upstream": 404,
    "invalid_key": 401,
    "tenant_suspended": 403,
    "key_revoked": 401,
    "key_expired": 401,
    "upstream_not_allowed": 403,
    "secret_required": 401,
    "invalid_secret": 401,
    "invalid_token": 401,
    "token_expired": 401,
    "origin_not_allowed": 403,
    "origin_required": 403,
    "ip_not_allowed": 403,
    "user_agent_not_allowed": 403,
    "http_method_not_allowed": 403,
    "rpc_method_not_allowed": 403,
    "invalid_rpc_request": 400,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "too_many_connections": 429,  # a WebSocket handshake past the key's cap of open sockets
    "invalid_path": 400,
    "payload_too_large": 413,
    "request_timeout": 408,
    "upstream_unreachable": 502,
    "upstream_timeout": 504,
    "service_unavailable": 503,
    "not_found": 404,
    "invalid_request": 400,
    "internal_error": 500,
    # Management API additions (not in DESIGN.md's proxy table): who the caller is and what they may do.
    "not_authenticated": 401,
    "permission_denied": 403,
    "method_not_allowed": 405,
    "not_acceptable": 406,
    "unsupported_media_type": 415,
}


def error_payload(code: str, message: str, request_id: str, fields: dict | None = None) -> dict:
    error: dict[str, object] = {"code": code, "message": message, "request_id": request_id}
    if fields:
        error["fields"] = fields
    return {"error": error}


def error_json(code: str, message: str, request_id: str, fields: dict | None = None) -> bytes:
    return json.dumps(error_payload(code, message, request_id, fields)).encode()
