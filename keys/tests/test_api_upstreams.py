"""The management API's upstreams: own and global, write-only credentials, SSRF refusal."""

import pytest

from keys import crypto
from keys.models import Upstream
from keys.tests.api_helpers import error_of

# A literal public address: saved without any DNS lookup (there is no DNS here).
PUBLIC_URL = "https://8.8.8.8/v1"


def create(api, **fields):
    return api.post("/api/v1/upstreams", {"slug": "rpc", "base_url": PUBLIC_URL, **fields}, format="json")


def test_list_shows_own_and_global_upstreams_not_other_tenants(
    api, loopback_upstream, tenant_upstream, other_tenant_upstream
):
    body = api.get("/api/v1/upstreams").json()
    assert {row["slug"]: row["is_global"] for row in body["results"]} == {"acme-api": False, "local": True}


def test_create_answers_201_with_design_fields_and_never_the_credential(api, tenant):
    response = create(api, name="RPC", auth={"type": "header", "name": "X-Api-Key", "value": "upstream-cred"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body == {
        "slug": "rpc",
        "name": "RPC",
        "base_url": PUBLIC_URL,
        "websocket_url": "",
        "auth": {"type": "header", "name": "X-Api-Key"},
        "timeout_seconds": 30,
        "is_active": True,
        "is_global": False,
    }
    assert b"upstream-cred" not in response.content
    upstream = Upstream.objects.get(slug="rpc")
    assert upstream.tenant == tenant and crypto.decrypt(upstream.auth_value_encrypted) == "upstream-cred"
    assert b"upstream-cred" not in api.get("/api/v1/upstreams/rpc").content


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000",
        "http://10.0.0.1",
        "http://192.168.1.1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0.0.0.0/",
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "http://user:pw@8.8.8.8/",
        "https://8.8.8.8/?key=1",
        "https://no-such-host.invalid/",
    ],
)
def test_create_refuses_urls_a_tenant_may_not_reach(api, base_url):
    error = error_of(create(api, base_url=base_url), 400, "invalid_request")
    assert list(error["fields"]) == ["base_url"]
    assert not Upstream.objects.filter(slug="rpc").exists()


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"allow_private_network": True}, "allow_private_network"),
        ({"tenant": 1}, "tenant"),
        ({"is_global": True}, "is_global"),
        ({"auth": {"type": "header", "value": "x"}}, "auth_name"),
        ({"auth": {"type": "bearer"}}, "auth_value"),
        ({"auth": {"type": "magic"}}, "auth"),
        ({"auth": {"type": "none", "secret": "x"}}, "auth"),
        ({"auth": "bearer"}, "auth"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": "30"}, "timeout_seconds"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": "local"}, "slug"),
    ],
)
def test_create_with_refused_field_is_400_naming_it(api, loopback_upstream, fields, named):
    error = error_of(create(api, **fields), 400, "invalid_request")
    assert named in error["fields"]
    assert Upstream.objects.filter(tenant__isnull=False).count() == 0


def test_patch_changes_fields_and_keeps_the_credential_unless_given(api):
    create(api, auth={"type": "bearer", "value": "first"})
    response = api.patch("/api/v1/upstreams/rpc", {"name": "Renamed", "timeout_seconds": 5}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Renamed" and response.json()["timeout_seconds"] == 5
    assert crypto.decrypt(Upstream.objects.get(slug="rpc").auth_value_encrypted) == "first"
    api.patch("/api/v1/upstreams/rpc", {"auth": {"value": "second"}}, format="json")
    assert crypto.decrypt(Upstream.objects.get(slug="rpc").auth_value_encrypted) == "second"


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"slug": "renamed"}, "slug"),
        ({"base_url": "http://127.0.0.1"}, "base_url"),
        ({"allow_private_network": True}, "allow_private_network"),
    ],
)
def test_patch_with_refused_field_is_400_and_changes_nothing(api, fields, named):
    create(api)
    error = error_of(api.patch("/api/v1/upstreams/rpc", fields, format="json"), 400, "invalid_request")
    assert named in error["fields"]
    upstream = Upstream.objects.get(slug="rpc")
    assert upstream.base_url == PUBLIC_URL and not upstream.allow_private_network


def test_global_upstreams_are_read_only(api, loopback_upstream):
    assert api.get("/api/v1/upstreams/local").json()["is_global"] is True
    error_of(api.patch("/api/v1/upstreams/local", {"name": "mine"}, format="json"), 403, "permission_denied")
    error_of(api.delete("/api/v1/upstreams/local"), 403, "permission_denied")
    assert Upstream.objects.get(slug="local").name == "local"


def test_delete_own_upstream_is_204_then_404(api):
    create(api)
    assert api.delete("/api/v1/upstreams/rpc").status_code == 204
    assert not Upstream.objects.filter(slug="rpc").exists()
    error_of(api.get("/api/v1/upstreams/rpc"), 404, "not_found")


# --- Credentials the proxy could not send: refused at save, never echoed ------------------------------

BAD_VALUE = "tok-Zq81\r\nX-Injected: 1"
RESERVED_NAMES = [
    "Authorization",
    "Proxy-Authorization",
    "TE",
    "Upgrade",
    "Keep-Alive",
    "Connection",
    "Transfer-Encoding",
    "Content-Length",
    "Host",
    "Cookie",
    "Trailer",
    "Proxy-Foo",
    "X-Forwarded-For",
    "X-Request-Id",
    "Traceparent",
]


@pytest.mark.parametrize(
    "value", [BAD_VALUE, "tok\nnext", "tok\rnext", "tok\x00", "tok\x7f", "tok\tx", " tok", "tök-€"]
)
@pytest.mark.parametrize("auth_type", ["bearer", "header"])
def test_a_header_credential_with_line_breaks_or_control_characters_is_400_never_echoed(
    api, auth_type, value
):
    response = create(api, auth={"type": auth_type, "name": "X-Api-Key", "value": value})
    error = error_of(response, 400, "invalid_request")
    assert list(error["fields"]) in (["auth_value"], ["auth"])  # a NUL: DRF's own refusal, on `auth`
    assert value not in response.content.decode() and "tok" not in response.content.decode()
    assert not Upstream.objects.filter(slug="rpc").exists()


@pytest.mark.parametrize("auth_type, name", [("basic", "user"), ("query", "apikey")])
@pytest.mark.parametrize("value", [BAD_VALUE, "pw\x00", "pw\u2028x"])
def test_a_basic_or_query_credential_with_control_characters_is_400(api, auth_type, name, value):
    response = create(api, auth={"type": auth_type, "name": name, "value": value})
    assert list(error_of(response, 400, "invalid_request")["fields"]) in (["auth_value"], ["auth"])
    assert "Zq81" not in response.content.decode()


@pytest.mark.parametrize("name", RESERVED_NAMES + [n.lower() for n in RESERVED_NAMES[:5]])
def test_a_header_the_proxy_manages_is_refused_as_the_credentials_name(api, name):
    response = create(api, auth={"type": "header", "name": name, "value": "v"})
    assert list(error_of(response, 400, "invalid_request")["fields"]) == ["auth_name"]
    assert not Upstream.objects.filter(slug="rpc").exists()


# (Leading and trailing white space, line breaks included, DRF trims before the service sees the name.)
@pytest.mark.parametrize("name", ["X\nKey", "X\r\nKey: 1", "X Key", "X:Key", "X-Kéy", "", "(X)"])
@pytest.mark.parametrize("auth_type", ["header", "query"])
def test_a_name_that_is_not_a_token_is_refused(api, auth_type, name):
    response = create(api, auth={"type": auth_type, "name": name, "value": "v"})
    assert list(error_of(response, 400, "invalid_request")["fields"]) == ["auth_name"]


@pytest.mark.parametrize("user", ["us:er", "us\r\ner", "user\x00"])
def test_a_basic_user_with_a_colon_or_control_characters_is_refused(api, user):
    response = create(api, auth={"type": "basic", "name": user, "value": "pw"})
    assert list(error_of(response, 400, "invalid_request")["fields"]) in (["auth_name"], ["auth"])


def test_an_update_to_a_bad_credential_is_refused_and_keeps_the_stored_one(api):
    assert create(api, auth={"type": "bearer", "value": "good-token"}).status_code == 201
    response = api.patch(
        "/api/v1/upstreams/rpc", {"auth": {"type": "bearer", "value": BAD_VALUE}}, format="json"
    )
    assert list(error_of(response, 400, "invalid_request")["fields"]) == ["auth_value"]
    assert crypto.decrypt(Upstream.objects.get(slug="rpc").auth_value_encrypted) == "good-token"


def test_a_stored_query_credential_cannot_move_into_a_header_it_would_break(api):
    assert create(api, auth={"type": "query", "name": "key", "value": "naïve-key"}).status_code == 201
    response = api.patch(
        "/api/v1/upstreams/rpc", {"auth": {"type": "header", "name": "X-Key"}}, format="json"
    )
    assert list(error_of(response, 400, "invalid_request")["fields"]) == ["auth_value"]
    assert "naïve" not in response.content.decode()


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "bearer", "value": "eyJhbGciOi.J9-_~+/="},
        {"type": "header", "name": "X-Api-Key", "value": "key with inner spaces"},
        {"type": "basic", "name": "", "value": "pässwörd with spaces"},
        {"type": "query", "name": "api_key", "value": "ключ"},
    ],
)
def test_ordinary_credentials_are_still_accepted(api, auth):
    assert create(api, auth=auth).status_code == 201


def test_an_upstream_may_name_its_own_websocket_url(api):
    response = create(api, websocket_url="wss://8.8.8.8/ws/v3/")
    assert response.status_code == 201, response.content
    assert response.json()["websocket_url"] == "wss://8.8.8.8/ws/v3"


@pytest.mark.parametrize(
    "websocket_url",
    [
        "https://8.8.8.8/ws",
        "ws://127.0.0.1/",
        "wss://10.0.0.1/ws",
        "wss://8.8.8.8/ws?key=1",
        "wss://u:p@8.8.8.8/",
    ],
)
def test_a_websocket_url_that_is_not_ws_or_not_public_is_400_naming_it(api, websocket_url):
    response = create(api, websocket_url=websocket_url)
    assert response.status_code == 400
    assert "websocket_url" in response.json()["error"]["fields"]
