"""The portal's upstream pages (portal/upstreams.py): list and detail for every member, create, edit
and delete for admins; write-only credentials, SSRF refusal as form errors, roles, tenant scope, CSRF."""

import pytest
from django.conf import settings
from django.urls import reverse

from keys import crypto, services, validators
from keys.models import AuditEvent, AuthType, Role, Upstream
from keys.tests.fixtures import PUBLIC_ADDRESS, make_resolver

CREDENTIAL = "upstream-cred-Zq8v3K"  # never to appear in any page
NEW_CREDENTIAL = "rotated-cred-Hx71Lm"


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    """The portal resolves upstream hosts with validators.resolve_host; here a table stands in for DNS."""
    resolve = make_resolver(
        {
            "api.example.com": [PUBLIC_ADDRESS],
            "rpc.example.com": [PUBLIC_ADDRESS],
            "other.example.com": [PUBLIC_ADDRESS],
            "localhost": ["127.0.0.1", "::1"],
            "intranet.example.com": ["10.1.2.3"],
            "metadata.example.com": ["169.254.169.254"],
            "rebind.example.com": [PUBLIC_ADDRESS, "127.0.0.1"],
        }
    )
    monkeypatch.setattr(validators, "resolve_host", resolve)
    return resolve


@pytest.fixture
def private_upstream(tenant, staff_user):
    """A factory: the tenant's upstream `acme-internal` at `base_url`, a private host staff allowed."""

    def make(base_url: str):
        return services.upstream_create(
            tenant=tenant,
            slug="acme-internal",
            base_url=base_url,
            allow_private_network=True,
            actor=staff_user,
            actor_is_staff=True,
        )

    return make


@pytest.fixture
def secret_upstream(tenant, dns):
    """The tenant's upstream with a header credential."""
    return services.upstream_create(
        tenant=tenant,
        slug="acme-rpc",
        base_url="https://rpc.example.com",
        auth_type=AuthType.HEADER,
        auth_name="X-Api-Key",
        auth_value=CREDENTIAL,
        actor="test",
        resolve=dns,
    )


def create_data(**overrides) -> dict:
    return {
        "slug": "weather",
        "name": "Weather",
        "base_url": "https://api.example.com/v2",
        "auth_type": "bearer",
        "auth_name": "",
        "auth_value": CREDENTIAL,
        "timeout_seconds": "20",
        "is_active": "on",
        **overrides,
    }


def edit_data(upstream: Upstream, **overrides) -> dict:
    data = {
        "name": upstream.name,
        "base_url": upstream.base_url,
        "auth_type": upstream.auth_type,
        "auth_name": upstream.auth_name,
        "auth_value": "",
        "timeout_seconds": str(upstream.timeout_seconds),
        "is_active": "on" if upstream.is_active else "",
        **overrides,
    }
    return {name: value for name, value in data.items() if value is not None}


def _snapshot(upstream: Upstream) -> tuple:
    upstream.refresh_from_db()
    return (
        upstream.name,
        upstream.base_url,
        upstream.auth_type,
        upstream.auth_name,
        upstream.auth_value_encrypted,
        upstream.timeout_seconds,
        upstream.is_active,
        upstream.allow_private_network,
        upstream.updated_at,
    )


def url(name: str, *args) -> str:
    return reverse(f"portal:{name}", args=args)


# --- List and detail --------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER])
def test_every_member_sees_own_and_global_upstreams_not_other_tenants(
    portal_client, role, loopback_upstream, tenant_upstream, other_tenant_upstream
):
    answer = portal_client(role).get(url("upstream_list"))
    assert answer.status_code == 200
    assert [u.slug for u in answer.context["own"]] == ["acme-api"]
    assert [u.slug for u in answer.context["shared"]] == ["local"]
    page = answer.content.decode()
    assert "acme-api" in page and "local" in page and "read-only" in page
    assert "globex-api" not in page and "other.example.com" not in page


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER])
def test_every_member_reads_an_upstream_but_never_its_credential(portal_client, role, secret_upstream):
    client = portal_client(role)
    answer = client.get(url("upstream_detail", "acme-rpc"))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "https://rpc.example.com" in page and "X-Api-Key" in page and "Named header" in page
    assert "Credential set</dt><dd>yes" in page
    assert CREDENTIAL not in page and secret_upstream.auth_value_encrypted not in page
    assert CREDENTIAL not in client.get(url("upstream_list")).content.decode()


def test_detail_says_when_no_credential_is_set(portal_client, tenant_upstream):
    page = portal_client(Role.VIEWER).get(url("upstream_detail", "acme-api")).content.decode()
    assert "Credential set</dt><dd>no" in page


@pytest.mark.parametrize(
    ("role", "sees_buttons"),
    [(Role.VIEWER, False), (Role.DEVELOPER, False), (Role.ADMIN, True), (Role.OWNER, True)],
)
def test_only_admins_see_the_manage_buttons(portal_client, role, sees_buttons, tenant_upstream):
    client = portal_client(role)
    page = client.get(url("upstream_detail", "acme-api")).content.decode()
    assert (url("upstream_edit", "acme-api") in page) is sees_buttons
    assert (url("upstream_delete", "acme-api") in page) is sees_buttons
    assert (url("upstream_create") in client.get(url("upstream_list")).content.decode()) is sees_buttons


def test_global_upstream_detail_is_read_only_even_for_the_owner(portal_client, loopback_upstream):
    answer = portal_client(Role.OWNER).get(url("upstream_detail", "local"))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "read-only" in page
    assert url("upstream_edit", "local") not in page and url("upstream_delete", "local") not in page


@pytest.mark.parametrize("name", ["upstream_detail", "upstream_edit", "upstream_delete"])
def test_other_tenants_upstream_is_not_found(portal_client, name, other_tenant_upstream):
    client = portal_client(Role.OWNER)
    assert client.get(url(name, "globex-api")).status_code == 404
    assert client.get(url(name, "no-such-upstream")).status_code == 404


# --- Create -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_admin_creates_an_upstream_with_an_encrypted_credential(portal_client, tenant, role):
    client = portal_client(role)
    form_page = client.get(url("upstream_create"))
    assert form_page.status_code == 200
    assert 'type="password"' in form_page.content.decode()
    assert "allow_private_network" not in form_page.context["form"].fields
    answer = client.post(url("upstream_create"), create_data())
    assert answer.status_code == 302
    assert answer["Location"] == url("upstream_detail", "weather")
    upstream = Upstream.objects.get(slug="weather")
    assert upstream.tenant == tenant and upstream.name == "Weather"
    assert upstream.base_url == "https://api.example.com/v2" and upstream.timeout_seconds == 20
    assert upstream.auth_type == AuthType.BEARER and upstream.is_active
    assert CREDENTIAL not in upstream.auth_value_encrypted
    assert crypto.decrypt(upstream.auth_value_encrypted) == CREDENTIAL
    assert not upstream.allow_private_network
    event = AuditEvent.objects.get(action="upstream.created", target_id="weather")
    assert event.tenant == tenant and event.actor is not None
    followed = client.get(answer["Location"]).content.decode()
    assert "weather" in followed and CREDENTIAL not in followed


def test_create_without_auth_and_unchecked_active(portal_client):
    data = create_data(auth_type="none", auth_value="")
    data.pop("is_active")  # an unchecked box is not sent
    answer = portal_client(Role.ADMIN).post(url("upstream_create"), data)
    assert answer.status_code == 302
    upstream = Upstream.objects.get(slug="weather")
    assert upstream.auth_type == AuthType.NONE and not upstream.has_credential and not upstream.is_active


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base_url": ""}, "base_url"),
        ({"base_url": "api.example.com"}, "base_url"),
        ({"base_url": "ftp://api.example.com/"}, "base_url"),
        ({"base_url": "file:///etc/passwd"}, "base_url"),
        ({"base_url": "https://user:pw@api.example.com/"}, "base_url"),
        ({"base_url": "https://api.example.com/?key=1"}, "base_url"),
        ({"base_url": "https://api.example.com/ x"}, "base_url"),
        ({"base_url": "https://no-such-host.invalid/"}, "base_url"),
        # The SSRF refusal: loopback, private, link-local (cloud metadata), however spelt.
        ({"base_url": "http://127.0.0.1/"}, "base_url"),
        ({"base_url": "http://localhost:8000"}, "base_url"),
        ({"base_url": "http://10.0.0.1"}, "base_url"),
        ({"base_url": "http://192.168.1.1"}, "base_url"),
        ({"base_url": "http://169.254.169.254/latest/meta-data"}, "base_url"),
        ({"base_url": "http://[::1]/"}, "base_url"),
        ({"base_url": "http://[::ffff:127.0.0.1]/"}, "base_url"),
        ({"base_url": "http://0.0.0.0/"}, "base_url"),
        ({"base_url": "https://intranet.example.com"}, "base_url"),
        ({"base_url": "https://metadata.example.com"}, "base_url"),
        ({"base_url": "https://rebind.example.com"}, "base_url"),
        # Slugs: taken (own, global, another tenant's), malformed, the page's own address.
        ({"slug": "acme-api"}, "slug"),
        ({"slug": "local"}, "slug"),
        ({"slug": "globex-api"}, "slug"),
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "-edge"}, "slug"),
        ({"slug": ""}, "slug"),
        ({"slug": "x" * 51}, "slug"),
        ({"slug": "new"}, "slug"),
        # Auth settings.
        ({"auth_type": "header", "auth_name": ""}, "auth_name"),
        ({"auth_type": "header", "auth_name": "X Api Key"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "Host"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "X-Forwarded-For"}, "auth_name"),
        ({"auth_type": "query", "auth_name": ""}, "auth_name"),
        ({"auth_type": "query", "auth_name": "api key"}, "auth_name"),
        ({"auth_type": "bearer", "auth_value": ""}, "auth_value"),
        ({"auth_type": "basic", "auth_name": "user", "auth_value": ""}, "auth_value"),
        ({"auth_type": "kerberos"}, "auth_type"),
        ({"auth_value": "x" * 4097}, "auth_value"),
        # Timeouts.
        ({"timeout_seconds": "0"}, "timeout_seconds"),
        ({"timeout_seconds": "601"}, "timeout_seconds"),
        ({"timeout_seconds": "soon"}, "timeout_seconds"),
        ({"timeout_seconds": ""}, "timeout_seconds"),
    ],
)
def test_bad_create_shows_a_form_error_saves_nothing_and_never_echoes_the_credential(
    portal_client, loopback_upstream, tenant_upstream, other_tenant_upstream, overrides, field
):
    client = portal_client(Role.ADMIN)
    before = set(Upstream.objects.values_list("slug", flat=True))
    audit_before = AuditEvent.objects.count()
    answer = client.post(url("upstream_create"), create_data(**overrides))
    assert answer.status_code == 200
    assert answer.context["form"].errors.get(field), answer.context["form"].errors
    assert set(Upstream.objects.values_list("slug", flat=True)) == before
    assert AuditEvent.objects.count() == audit_before
    page = answer.content.decode()
    assert CREDENTIAL not in page
    assert 'role="alert"' in page


def test_the_ssrf_refusal_names_the_address_on_the_base_url_field(portal_client):
    answer = portal_client(Role.ADMIN).post(url("upstream_create"), create_data(base_url="http://10.0.0.1"))
    errors = answer.context["form"].errors["base_url"]
    assert any("non-public address" in error and "10.0.0.1" in error for error in errors)


def test_tenant_form_cannot_allow_a_private_network(portal_client):
    client = portal_client(Role.OWNER)
    answer = client.post(
        url("upstream_create"), create_data(base_url="http://127.0.0.1:9", allow_private_network="on")
    )
    assert answer.status_code == 200 and answer.context["form"].errors.get("base_url")
    assert not Upstream.objects.filter(slug="weather").exists()
    answer = client.post(url("upstream_create"), create_data(allow_private_network="on"))
    assert answer.status_code == 302
    assert Upstream.objects.get(slug="weather").allow_private_network is False


# --- Edit -------------------------------------------------------------------------------------------


def test_edit_form_starts_from_the_upstream_without_its_credential(portal_client, secret_upstream):
    answer = portal_client(Role.ADMIN).get(url("upstream_edit", "acme-rpc"))
    assert answer.status_code == 200
    form = answer.context["form"]
    assert "slug" not in form.fields and "allow_private_network" not in form.fields
    assert form.initial["base_url"] == "https://rpc.example.com" and form.initial["auth_name"] == "X-Api-Key"
    assert "auth_value" not in form.initial
    page = answer.content.decode()
    assert "https://rpc.example.com" in page and 'type="password"' in page
    assert CREDENTIAL not in page and secret_upstream.auth_value_encrypted not in page


def test_edit_without_a_credential_keeps_the_stored_one(portal_client, secret_upstream):
    encrypted = secret_upstream.auth_value_encrypted
    data = edit_data(
        secret_upstream, name="Renamed", base_url="https://api.example.com/v3", timeout_seconds="5"
    )
    answer = portal_client(Role.ADMIN).post(url("upstream_edit", "acme-rpc"), data)
    assert answer.status_code == 302 and answer["Location"] == url("upstream_detail", "acme-rpc")
    secret_upstream.refresh_from_db()
    assert secret_upstream.name == "Renamed" and secret_upstream.timeout_seconds == 5
    assert secret_upstream.base_url == "https://api.example.com/v3"
    assert secret_upstream.auth_value_encrypted == encrypted
    assert crypto.decrypt(secret_upstream.auth_value_encrypted) == CREDENTIAL
    event = AuditEvent.objects.filter(action="upstream.updated").latest("pk")
    assert "auth_value" not in event.data["fields"]


def test_edit_with_a_credential_replaces_it(portal_client, secret_upstream):
    answer = portal_client(Role.OWNER).post(
        url("upstream_edit", "acme-rpc"), edit_data(secret_upstream, auth_value=NEW_CREDENTIAL)
    )
    assert answer.status_code == 302
    secret_upstream.refresh_from_db()
    assert crypto.decrypt(secret_upstream.auth_value_encrypted) == NEW_CREDENTIAL
    event = AuditEvent.objects.filter(action="upstream.updated").latest("pk")
    assert "auth_value" in event.data["fields"] and NEW_CREDENTIAL not in str(event.data)


def test_edit_removes_the_credential_with_auth_type_none(portal_client, secret_upstream):
    data = edit_data(secret_upstream, auth_type="none", auth_name="", clear_credential="on")
    answer = portal_client(Role.ADMIN).post(url("upstream_edit", "acme-rpc"), data)
    assert answer.status_code == 302
    secret_upstream.refresh_from_db()
    assert secret_upstream.auth_type == AuthType.NONE and not secret_upstream.has_credential


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base_url": "http://127.0.0.1:8000"}, "base_url"),
        ({"base_url": "http://localhost"}, "base_url"),
        ({"base_url": "https://intranet.example.com"}, "base_url"),
        ({"base_url": "gopher://api.example.com"}, "base_url"),
        ({"base_url": ""}, "base_url"),
        ({"auth_name": ""}, "auth_name"),
        ({"auth_name": "Content-Length"}, "auth_name"),
        ({"auth_type": "query", "auth_name": "a&b"}, "auth_name"),
        ({"timeout_seconds": "0"}, "timeout_seconds"),
        # A signing-in upstream cannot drop its credential.
        ({"clear_credential": "on"}, "auth_value"),
        ({"clear_credential": "on", "auth_value": NEW_CREDENTIAL}, "__all__"),
    ],
)
def test_bad_edit_shows_a_form_error_and_changes_nothing(portal_client, secret_upstream, overrides, field):
    client = portal_client(Role.ADMIN)
    before = _snapshot(secret_upstream)
    audit_before = AuditEvent.objects.count()
    answer = client.post(url("upstream_edit", "acme-rpc"), edit_data(secret_upstream, **overrides))
    assert answer.status_code == 200
    assert answer.context["form"].errors.get(field), answer.context["form"].errors
    assert _snapshot(secret_upstream) == before
    assert AuditEvent.objects.count() == audit_before
    page = answer.content.decode()
    assert CREDENTIAL not in page and NEW_CREDENTIAL not in page
    assert secret_upstream.auth_value_encrypted not in page


def test_switching_to_header_auth_without_a_credential_is_refused(portal_client, tenant_upstream):
    before = _snapshot(tenant_upstream)
    data = edit_data(tenant_upstream, auth_type="header", auth_name="X-Api-Key")
    answer = portal_client(Role.ADMIN).post(url("upstream_edit", "acme-api"), data)
    assert answer.status_code == 200 and answer.context["form"].errors.get("auth_value")
    assert _snapshot(tenant_upstream) == before


def test_editing_a_staff_permitted_private_upstream_keeps_the_permission(portal_client, private_upstream):
    upstream = private_upstream("http://10.0.0.8")
    answer = portal_client(Role.ADMIN).post(
        url("upstream_edit", "acme-internal"), edit_data(upstream, name="Internal", allow_private_network="")
    )
    assert answer.status_code == 302
    upstream.refresh_from_db()
    assert upstream.name == "Internal" and upstream.allow_private_network


@pytest.mark.parametrize(
    "new_url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:6379/",
        "http://10.0.0.8:2375/",
        "https://10.0.0.8",
    ],
)
def test_moving_a_staff_permitted_private_upstream_elsewhere_is_refused(
    portal_client, private_upstream, new_url
):
    # Staff allowed one private host; a tenant admin may not point the upstream at any other machine.
    upstream = private_upstream("http://10.0.0.8")
    before = _snapshot(upstream)

    answer = portal_client(Role.ADMIN).post(
        url("upstream_edit", "acme-internal"), edit_data(upstream, base_url=new_url, allow_private_network="")
    )

    assert answer.status_code == 200
    assert answer.context["form"].errors["base_url"]
    assert _snapshot(upstream) == before


def test_a_new_path_on_the_permitted_private_host_is_fine(portal_client, private_upstream):
    upstream = private_upstream("http://10.0.0.8/v1")
    answer = portal_client(Role.ADMIN).post(
        url("upstream_edit", "acme-internal"), edit_data(upstream, base_url="http://10.0.0.8/v2")
    )
    assert answer.status_code == 302
    upstream.refresh_from_db()
    assert upstream.base_url == "http://10.0.0.8/v2" and upstream.allow_private_network


@pytest.mark.parametrize("name", ["upstream_edit", "upstream_delete"])
def test_global_upstream_cannot_be_edited_or_deleted_by_a_tenant(portal_client, loopback_upstream, name):
    client = portal_client(Role.OWNER)
    before = _snapshot(loopback_upstream)
    assert client.get(url(name, "local")).status_code == 404
    answer = client.post(url(name, "local"), edit_data(loopback_upstream, name="mine now"))
    assert answer.status_code == 404
    assert Upstream.objects.filter(slug="local").exists() and _snapshot(loopback_upstream) == before


@pytest.mark.parametrize("name", ["upstream_edit", "upstream_delete"])
def test_other_tenants_upstream_cannot_be_edited_or_deleted(portal_client, other_tenant_upstream, name):
    before = _snapshot(other_tenant_upstream)
    answer = portal_client(Role.OWNER).post(
        url(name, "globex-api"), edit_data(other_tenant_upstream, name="x")
    )
    assert answer.status_code == 404
    assert Upstream.objects.filter(slug="globex-api").exists() and _snapshot(other_tenant_upstream) == before


# --- Delete -----------------------------------------------------------------------------------------


def test_delete_asks_first_and_get_deletes_nothing(portal_client, tenant, secret_upstream):
    api_key, _ = services.api_key_create(
        tenant=tenant, name="uses rpc", upstreams=[secret_upstream], actor="t"
    )
    answer = portal_client(Role.ADMIN).get(url("upstream_delete", "acme-rpc"))
    assert answer.status_code == 200
    page = answer.content.decode()
    assert 'method="post"' in page and "uses rpc" in page and api_key.key_id in page
    assert CREDENTIAL not in page
    assert Upstream.objects.filter(slug="acme-rpc").exists()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
def test_post_deletes_the_upstream(portal_client, tenant, secret_upstream, role):
    answer = portal_client(role).post(url("upstream_delete", "acme-rpc"))
    assert answer.status_code == 302 and answer["Location"] == url("upstream_list")
    assert not Upstream.objects.filter(slug="acme-rpc").exists()
    assert AuditEvent.objects.filter(action="upstream.deleted", target_id="acme-rpc", tenant=tenant).exists()


# --- Roles, login, CSRF -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER])
def test_viewers_and_developers_cannot_create_edit_or_delete(portal_client, secret_upstream, role):
    client = portal_client(role)
    before = _snapshot(secret_upstream)
    for name, args in (
        ("upstream_create", ()),
        ("upstream_edit", ("acme-rpc",)),
        ("upstream_delete", ("acme-rpc",)),
    ):
        assert client.get(url(name, *args)).status_code == 403
    assert client.post(url("upstream_create"), create_data()).status_code == 403
    answer = client.post(
        url("upstream_edit", "acme-rpc"), edit_data(secret_upstream, auth_value=NEW_CREDENTIAL)
    )
    assert answer.status_code == 403
    assert client.post(url("upstream_delete", "acme-rpc")).status_code == 403
    assert not Upstream.objects.filter(slug="weather").exists()
    assert _snapshot(secret_upstream) == before


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("upstream_list", ()),
        ("upstream_create", ()),
        ("upstream_detail", ("acme-api",)),
        ("upstream_edit", ("acme-api",)),
        ("upstream_delete", ("acme-api",)),
    ],
)
def test_pages_need_login(client, tenant_upstream, name, args):
    answers = [client.get(url(name, *args))]
    if name not in ("upstream_list", "upstream_detail"):  # those answer POST with 405 first
        answers.append(client.post(url(name, *args)))
    for answer in answers:
        assert answer.status_code == 302
        assert answer["Location"].startswith(reverse("portal:login"))
    assert Upstream.objects.filter(slug="acme-api").exists()


def test_list_and_detail_refuse_post(portal_client, tenant_upstream):
    client = portal_client(Role.OWNER)
    assert client.post(url("upstream_list")).status_code == 405
    assert client.post(url("upstream_detail", "acme-api")).status_code == 405


def test_csrf_is_enforced_on_create_edit_and_delete(portal_client, secret_upstream):
    client = portal_client(Role.ADMIN, enforce_csrf_checks=True)
    before = _snapshot(secret_upstream)
    assert client.post(url("upstream_create"), create_data()).status_code == 403
    answer = client.post(url("upstream_edit", "acme-rpc"), edit_data(secret_upstream, name="renamed"))
    assert answer.status_code == 403
    assert client.post(url("upstream_delete", "acme-rpc")).status_code == 403
    assert not Upstream.objects.filter(slug="weather").exists() and _snapshot(secret_upstream) == before
    # With the token from a form, the same posts go through.
    client.get(url("upstream_create"))
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert client.post(url("upstream_create"), create_data(csrfmiddlewaretoken=token)).status_code == 302
    answer = client.post(
        url("upstream_edit", "acme-rpc"),
        edit_data(secret_upstream, name="renamed", csrfmiddlewaretoken=token),
    )
    assert answer.status_code == 302
    answer = client.post(url("upstream_delete", "acme-rpc"), {"csrfmiddlewaretoken": token})
    assert answer.status_code == 302
    assert Upstream.objects.filter(slug="weather").exists()
    assert not Upstream.objects.filter(slug="acme-rpc").exists()


# --- Credentials the proxy could not send ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"auth_value": CREDENTIAL + "\r\nX-Injected: 1"}, "auth_value"),
        ({"auth_value": CREDENTIAL + "\x00"}, "auth_value"),
        ({"auth_type": "header", "auth_name": "Authorization"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "Proxy-Authorization"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "TE"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "Upgrade"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "Keep-Alive"}, "auth_name"),
    ],
)
def test_a_credential_the_proxy_could_not_send_is_a_form_error_never_echoed(portal_client, overrides, field):
    answer = portal_client(Role.ADMIN).post(url("upstream_create"), create_data(**overrides))
    assert answer.status_code == 200
    assert list(answer.context["form"].errors) == [field], answer.context["form"].errors
    assert CREDENTIAL not in answer.content.decode()
    assert not Upstream.objects.filter(slug="weather").exists()


def test_editing_in_a_credential_with_a_line_break_is_a_form_error(portal_client, secret_upstream):
    client = portal_client(Role.ADMIN)
    answer = client.post(
        url("upstream_edit", secret_upstream.slug),
        edit_data(secret_upstream, auth_value=NEW_CREDENTIAL + "\n"),
    )
    assert list(answer.context["form"].errors) == ["auth_value"]
    assert NEW_CREDENTIAL not in answer.content.decode()
    secret_upstream.refresh_from_db()
    assert crypto.decrypt(secret_upstream.auth_value_encrypted) == CREDENTIAL
