"""Nothing a peer sends makes the management API or the token exchange answer 500: malformed ids are no
route (404) or a refused key (401) before any lookup, and a database that does not answer is 503
`service_unavailable` with Retry-After, in the contract's error body."""

import socket
from contextlib import contextmanager

import pytest
from django.db import connections
from rest_framework.test import APIClient

from keys.models import Role
from keys.tests.api_helpers import basic, error_of

pytestmark = pytest.mark.usefixtures("generous_exchange_limits")
NUL_PATHS = [
    ("get", "/api/v1/keys/pk_%00"),
    ("patch", "/api/v1/keys/pk_%00"),
    ("delete", "/api/v1/keys/pk_%00"),
    ("post", "/api/v1/keys/pk_%00/rotate"),
    ("get", "/api/v1/keys/pk_%00/usage"),
    ("get", "/api/v1/keys/pk_a%00b"),
    ("get", "/api/v1/upstreams/a%00b"),
    ("patch", "/api/v1/upstreams/a%00b"),
    ("delete", "/api/v1/upstreams/a%00b"),
    ("get", "/api/v1/upstreams/%00"),
    ("get", "/api/v1/management-tokens/%00"),
    ("get", "/api/v1/members/1%00"),
]


@pytest.fixture
def generous_exchange_limits(settings):
    settings.KEYS_TOKEN_EXCHANGE_RATE = "100000/m"
    settings.KEYS_TOKEN_EXCHANGE_IP_RATE = "100000/m"


@contextmanager
def database_unreachable():
    """The default database, for real, does not answer: its connection is replaced by one to a port
    where nothing listens (PostgreSQL) or to a file that cannot be opened (SQLite). Restored after."""
    original = connections["default"]
    settings_dict = dict(original.settings_dict)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection to it is refused
    if original.vendor == "postgresql":
        settings_dict.update(HOST="127.0.0.1", PORT=str(closed.getsockname()[1]))
    else:
        settings_dict.update(NAME="/nonexistent-directory/no.sqlite3")
    broken = type(original)(settings_dict, alias="default")
    connections["default"] = broken
    try:
        yield
    finally:
        broken.close()
        connections["default"] = original
        closed.close()


@pytest.mark.parametrize("method, path", NUL_PATHS)
def test_malformed_ids_in_the_path_are_404_without_a_lookup(api, method, path, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # authentication only: the token, its tenant, its last use
        response = getattr(api, method)(path, {}, format="json")
    error_of(response, 404, "not_found")


@pytest.mark.parametrize("key_id", ["pk_\x00", "pk_" + "a" * 29 + "\x00", "\x00"])
def test_token_exchange_with_a_nul_in_the_key_id_is_401_invalid_key(db, key_id):
    response = APIClient().post("/api/v1/tokens", {}, format="json", HTTP_AUTHORIZATION=basic(key_id, "sk_x"))
    error_of(response, 401, "invalid_key")


def test_a_nul_in_the_tenant_header_is_no_tenant(session_client):
    client = session_client(Role.ADMIN)
    error_of(client.get("/api/v1/keys", HTTP_X_TENANT="ac\x00me"), 403, "permission_denied")


def test_a_nul_in_a_key_bodys_upstream_is_a_field_error(api):
    response = api.post("/api/v1/keys", {"name": "k", "upstreams": ["a\x00b"]}, format="json")
    assert "upstreams" in error_of(response, 400, "invalid_request")["fields"]


def test_token_exchange_with_the_database_down_is_503(api_key_and_secret):
    api_key, secret = api_key_and_secret
    with database_unreachable():
        response = APIClient().post(
            "/api/v1/tokens", {}, format="json", HTTP_AUTHORIZATION=basic(api_key.key_id, secret)
        )
    error = error_of(response, 503, "service_unavailable")
    assert 1 <= int(response["Retry-After"]) <= 30
    assert secret not in response.content.decode() and "Traceback" not in error["message"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/v1/keys", None),
        ("post", "/api/v1/keys", {"name": "new"}),
        ("get", "/api/v1/upstreams", None),
        ("get", "/api/v1/members", None),
        ("get", "/api/v1/tenant", None),
    ],
)
def test_management_api_with_the_database_down_is_503(api, method, path, body):
    with database_unreachable():
        response = getattr(api, method)(path, body, format="json")
    error_of(response, 503, "service_unavailable")
    assert 1 <= int(response["Retry-After"]) <= 30


def test_the_api_answers_again_once_the_database_is_back(api):
    with database_unreachable():
        error_of(api.get("/api/v1/keys"), 503, "service_unavailable")
    assert api.get("/api/v1/keys").status_code == 200


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["arrays", "objects"],
)
def test_json_nested_past_the_parsers_depth_is_400_not_500(api, api_key_and_secret, body):
    api_key, secret = api_key_and_secret
    for method, url in [("post", "/api/v1/keys"), ("patch", f"/api/v1/keys/{api_key.key_id}")]:
        response = getattr(api, method)(url, data=body, content_type="application/json")
        error_of(response, 400, "invalid_request")
    exchange = APIClient().post(
        "/api/v1/tokens",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=basic(api_key.key_id, secret),
    )
    error_of(exchange, 400, "invalid_request")
