"""Writes (keys/services/): validation by field, secrets shown once and stored hashed, the audit trail."""

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from keys import crypto, selectors, services
from keys.models import (
    AccessToken,
    ApiKey,
    AuditEvent,
    AuthType,
    ManagementToken,
    Membership,
    Role,
    Tenant,
    Upstream,
)
from keys.tests.fixtures import PUBLIC_ADDRESS, make_resolver


def field_errors(excinfo) -> set[str]:
    return set(excinfo.value.message_dict)


def every_stored_value() -> str:
    """Every value of every column of every table, as text."""
    values: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names
            values.extend(str(value) for row in cursor.fetchall() for value in row)
    return "\n".join(values)


def dumpdata() -> str:
    out = StringIO()
    call_command("dumpdata", stdout=out)
    return out.getvalue()


# --- tenants --------------------------------------------------------------------------------------


def test_tenant_create_makes_the_owner_a_member_and_records_it(db):
    tenant, membership = services.tenant_create(
        slug="initech", owner_email="Boss@Initech.example", actor="test"
    )
    assert tenant.slug == "initech" and tenant.name == "initech" and tenant.is_active
    assert membership.tenant == tenant and membership.role == Role.OWNER
    assert membership.user.email == "Boss@initech.example"
    assert not membership.user.has_usable_password()
    event = AuditEvent.objects.get(action="tenant.created", tenant=tenant)
    assert event.actor_label == "test" and event.target_id == "initech"


def test_tenant_create_reuses_the_user_with_that_email_whatever_its_case(tenant):
    other, membership = services.tenant_create(slug="initech", owner_email="OWNER@acme.example")
    assert get_user_model().objects.filter(email__iexact="owner@acme.example").count() == 1
    assert Membership.objects.filter(user=membership.user).count() == 2


@pytest.mark.parametrize(
    "slug", ["", "Acme", "-acme", "acme-", "ac me", "acme_corp", "a" * 51, "acme/../x", "ácme"]
)
def test_tenant_create_refuses_bad_slugs(db, slug):
    with pytest.raises(ValidationError) as excinfo:
        services.tenant_create(slug=slug, owner_email="owner@x.example")
    assert "slug" in field_errors(excinfo)
    assert not Tenant.objects.exists()


def test_tenant_create_refuses_a_duplicate_slug(tenant):
    with pytest.raises(ValidationError) as excinfo:
        services.tenant_create(slug="acme", owner_email="someone@else.example")
    assert "slug" in field_errors(excinfo)


@pytest.mark.parametrize("email", ["", "not-an-email", "a@", "@b.example", "a b@c.example"])
def test_tenant_create_refuses_a_bad_owner_email(db, email):
    with pytest.raises(ValidationError) as excinfo:
        services.tenant_create(slug="initech", owner_email=email)
    assert "email" in field_errors(excinfo)


def test_tenant_set_active_records_suspension_and_reactivation(tenant):
    services.tenant_set_active(tenant=tenant, is_active=False, actor="staff")
    tenant.refresh_from_db()
    assert not tenant.is_active
    services.tenant_set_active(tenant=tenant, is_active=True, actor="staff")
    tenant.refresh_from_db()
    assert tenant.is_active
    actions = list(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert "tenant.suspended" in actions and "tenant.activated" in actions


def test_membership_set_adds_then_changes_the_role(tenant, user):
    services.membership_set(tenant=tenant, user=user, role=Role.VIEWER)
    services.membership_set(tenant=tenant, user=user, role=Role.ADMIN)
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.ADMIN
    actions = set(AuditEvent.objects.filter(tenant=tenant).values_list("action", flat=True))
    assert {"member.added", "member.role_changed"} <= actions


@pytest.mark.parametrize("role", ["superuser", "", "OWNER"])
def test_membership_set_refuses_unknown_roles(tenant, user, role):
    with pytest.raises(ValidationError) as excinfo:
        services.membership_set(tenant=tenant, user=user, role=role)
    assert "role" in field_errors(excinfo)


# --- API keys: creation and the secret shown once -------------------------------------------------


def test_api_key_create_returns_a_well_formed_id_and_secret_once(tenant, loopback_upstream):
    api_key, secret = services.api_key_create(
        tenant=tenant, name="web app", upstreams=[loopback_upstream], actor="test"
    )
    assert crypto.well_formed(api_key.key_id, crypto.KEY_ID_PREFIX)
    assert crypto.well_formed(secret, crypto.SECRET_PREFIX)
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.secret_hash == crypto.hash_secret(secret)
    assert selectors.api_key_secret_valid(api_key=stored, secret=secret)
    assert list(stored.upstreams.all()) == [loopback_upstream]
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.target_id == api_key.key_id and event.data == {"name": "web app", "upstreams": ["local"]}


def test_api_key_create_records_the_acting_user(tenant, member):
    api_key, _ = services.api_key_create(tenant=tenant, name="k", actor=member, ip_address="203.0.113.9")
    assert api_key.created_by == member
    event = AuditEvent.objects.get(action="api_key.created")
    assert event.actor == member and event.ip_address == "203.0.113.9"


def test_clear_secrets_and_credentials_are_stored_nowhere(tenant, public_dns):
    _, management_token = services.management_token_create(tenant=tenant)
    upstream = services.upstream_create(
        tenant=tenant,
        slug="paid-api",
        base_url="https://api.example.com",
        auth_type=AuthType.HEADER,
        auth_name="X-Api-Key",
        auth_value="upstream-credential-Zq81",
        resolve=public_dns,
    )
    api_key, first_secret = services.api_key_create(tenant=tenant, name="k", upstreams=[upstream])
    second_secret = services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1))
    _, access_token = services.access_token_issue(api_key=api_key)
    clear_values = [management_token, first_secret, second_secret, access_token, "upstream-credential-Zq81"]

    stored, dumped = every_stored_value(), dumpdata()
    assert api_key.key_id in stored and api_key.key_id in dumped  # the scan does see the rows
    for clear in clear_values:
        assert clear not in stored
        assert clear not in dumped


def test_allowlists_are_stored_normalised(tenant):
    api_key, _ = services.api_key_create(
        tenant=tenant,
        name="k",
        allowed_origins=["HTTPS://App.Example.com:443", "https://app.example.com", "*.Example.COM"],
        allowed_ips=[" 203.0.113.7 ", "2001:DB8::/32"],
        allowed_user_agents=[" curl/* "],
        allowed_http_methods=["get", "Post"],
        allowed_rpc_methods=[" eth_blockNumber "],
        rate_limit=" 100/m ",
    )
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.allowed_origins == ["https://app.example.com", "*.example.com"]
    assert stored.allowed_ips == ["203.0.113.7/32", "2001:db8::/32"]
    assert stored.allowed_user_agents == ["curl/*"]
    assert stored.allowed_http_methods == ["GET", "POST"]
    assert stored.allowed_rpc_methods == ["eth_blockNumber"]
    assert stored.rate_limit == "100/m"


def test_allowlists_are_normalised_on_update(api_key):
    services.api_key_update(api_key=api_key, allowed_origins=["APP.example.com"], rate_limit="")
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.allowed_origins == ["app.example.com"]
    assert stored.rate_limit is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("allowed_origins", ["javascript:alert(1)"]),
        ("allowed_origins", ["*.com"]),
        ("allowed_origins", "https://app.example.com"),
        ("allowed_ips", ["10.0.0.1/8"]),
        ("allowed_ips", ["bogus"]),
        ("allowed_user_agents", ["bad\x00agent"]),
        ("allowed_http_methods", ["G E T"]),
        ("allowed_rpc_methods", ["eth_*"]),
        ("rate_limit", "0/m"),
        ("rate_limit", "100/x"),
        ("daily_quota", -1),
        ("name", ""),
        ("name", "x" * 201),
    ],
)
def test_bad_values_are_refused_by_field(tenant, field, value):
    values = {"name": "k", field: value}
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_create(tenant=tenant, **values)
    assert field in field_errors(excinfo)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("allowed_origins", ["https://*.*.com"]), ("allowed_ips", ["10.0.0.1/8"]), ("rate_limit", "1.5/m")],
)
def test_bad_values_are_refused_on_update_and_nothing_is_applied(api_key, field, value):
    before = ApiKey.objects.get(pk=api_key.pk)
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_update(api_key=api_key, **{field: value})
    assert field in field_errors(excinfo)
    assert getattr(ApiKey.objects.get(pk=api_key.pk), field) == getattr(before, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key_id", "pk_chosenByTheCaller0000000000000"),
        ("secret_hash", "0" * 64),
        ("previous_secret_hash", "0" * 64),
        ("previous_secret_expires_at", timezone.now()),
        ("revoked_at", None),
        ("created_by", None),
        ("created_at", timezone.now()),
        ("last_used_at", timezone.now()),
        ("id", 999),
        ("pk", 999),
    ],
)
def test_fields_that_may_not_be_set_are_refused_on_create(tenant, field, value):
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_create(tenant=tenant, name="k", **{field: value})
    assert field in field_errors(excinfo)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    "field", ["key_id", "secret_hash", "tenant", "revoked_at", "created_at", "last_used_at", "id"]
)
def test_fields_that_may_not_be_changed_are_refused_on_update(api_key, other_tenant, field):
    value = {"tenant": other_tenant, "key_id": "pk_x", "secret_hash": "0" * 64, "id": 999}.get(
        field, timezone.now()
    )
    before = ApiKey.objects.filter(pk=api_key.pk).values().get()
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_update(api_key=api_key, **{field: value})
    assert field in field_errors(excinfo)
    assert ApiKey.objects.filter(pk=api_key.pk).values().get() == before


def test_upstreams_of_another_tenant_are_refused(tenant, other_tenant_upstream):
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_create(tenant=tenant, name="k", upstreams=[other_tenant_upstream])
    assert "upstreams" in field_errors(excinfo)
    assert not ApiKey.objects.exists()


def test_upstreams_of_another_tenant_are_refused_on_update(api_key, other_tenant_upstream, loopback_upstream):
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_update(api_key=api_key, upstreams=[other_tenant_upstream])
    assert "upstreams" in field_errors(excinfo)
    assert list(api_key.upstreams.all()) == [loopback_upstream]


def test_a_key_may_use_its_tenants_upstreams_and_global_ones(tenant, tenant_upstream, loopback_upstream):
    api_key, _ = services.api_key_create(
        tenant=tenant, name="k", upstreams=[tenant_upstream, loopback_upstream]
    )
    assert set(api_key.upstreams.all()) == {tenant_upstream, loopback_upstream}


def test_api_key_update_changes_allowed_fields_and_records_them(api_key, tenant_upstream):
    services.api_key_update(
        api_key=api_key, name="renamed", secret_required=True, upstreams=[tenant_upstream], actor="test"
    )
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.name == "renamed" and stored.secret_required
    assert list(stored.upstreams.all()) == [tenant_upstream]
    event = AuditEvent.objects.get(action="api_key.updated")
    assert event.data == {"fields": ["name", "secret_required", "upstreams"]}


# --- rotation ----------------------------------------------------------------------------------------


def test_rotation_old_secret_valid_within_grace_and_invalid_after(api_key_and_secret):
    api_key, old_secret = api_key_and_secret
    before = timezone.now()
    new_secret = services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1))
    after = timezone.now()
    api_key = ApiKey.objects.get(pk=api_key.pk)
    assert new_secret != old_secret
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new_secret)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old_secret, now=after)
    assert selectors.api_key_secret_valid(
        api_key=api_key, secret=old_secret, now=before + timedelta(minutes=59, seconds=59)
    )
    assert not selectors.api_key_secret_valid(
        api_key=api_key, secret=old_secret, now=after + timedelta(hours=1)
    )
    assert not selectors.api_key_secret_valid(
        api_key=api_key, secret=old_secret, now=after + timedelta(days=30)
    )
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new_secret, now=after + timedelta(days=30))


def test_rotation_default_grace_is_24_hours(api_key_and_secret):
    api_key, old_secret = api_key_and_secret
    services.api_key_rotate(api_key=api_key)
    api_key = ApiKey.objects.get(pk=api_key.pk)
    now = timezone.now()
    assert selectors.api_key_secret_valid(api_key=api_key, secret=old_secret, now=now + timedelta(hours=23))
    assert not selectors.api_key_secret_valid(
        api_key=api_key, secret=old_secret, now=now + timedelta(hours=25)
    )


def test_rotation_with_zero_grace_kills_the_old_secret_at_once(api_key_and_secret):
    api_key, old_secret = api_key_and_secret
    new_secret = services.api_key_rotate(api_key=api_key, grace=timedelta(0))
    api_key = ApiKey.objects.get(pk=api_key.pk)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=old_secret)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=new_secret)


def test_a_second_rotation_ends_the_first_secrets_grace(api_key_and_secret):
    api_key, first = api_key_and_secret
    second = services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1))
    third = services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1))
    api_key = ApiKey.objects.get(pk=api_key.pk)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=first)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=second)
    assert selectors.api_key_secret_valid(api_key=api_key, secret=third)


def test_negative_grace_is_refused_and_the_secret_kept(api_key_and_secret):
    api_key, secret = api_key_and_secret
    with pytest.raises(ValidationError) as excinfo:
        services.api_key_rotate(api_key=api_key, grace=timedelta(seconds=-1))
    assert "grace_seconds" in field_errors(excinfo)
    assert selectors.api_key_secret_valid(api_key=ApiKey.objects.get(pk=api_key.pk), secret=secret)


def test_rotation_is_audited_without_the_secret(api_key):
    secret = services.api_key_rotate(api_key=api_key, grace=timedelta(minutes=5), actor="test")
    event = AuditEvent.objects.get(action="api_key.rotated")
    assert event.data == {"grace_seconds": 300}
    assert secret not in str(event.data)


# --- revocation -------------------------------------------------------------------------------------


def test_revoke_is_idempotent_and_audited_once(api_key):
    services.api_key_revoke(api_key=api_key, actor="test")
    first = ApiKey.objects.get(pk=api_key.pk).revoked_at
    services.api_key_revoke(api_key=ApiKey.objects.get(pk=api_key.pk), actor="test")
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert first is not None and stored.revoked_at == first
    assert stored.state == "revoked"
    assert AuditEvent.objects.filter(action="api_key.revoked", target_id=api_key.key_id).count() == 1


# --- access tokens -----------------------------------------------------------------------------------


def test_access_token_default_ttl_is_900_seconds(api_key):
    now = timezone.now()
    token, clear = services.access_token_issue(api_key=api_key, now=now)
    assert token.expires_at == now + timedelta(seconds=900)
    assert crypto.well_formed(clear, crypto.ACCESS_TOKEN_PREFIX)
    assert AccessToken.objects.get(pk=token.pk).token_hash == crypto.hash_secret(clear)


@pytest.mark.parametrize("ttl", [1, 60, 86400])
def test_access_token_ttl_within_bounds_is_accepted(api_key, ttl):
    now = timezone.now()
    token, _ = services.access_token_issue(api_key=api_key, ttl=ttl, now=now)
    assert token.expires_at == now + timedelta(seconds=ttl)


@pytest.mark.parametrize("ttl", [0, -5, 86401, 10**9, "soon", "900", 900.0, 1.5, True, False, [900]])
def test_access_token_ttl_out_of_bounds_or_not_an_integer_is_refused(api_key, ttl):
    with pytest.raises(ValidationError) as excinfo:
        services.access_token_issue(api_key=api_key, ttl=ttl)
    assert field_errors(excinfo) == {"ttl"}
    assert not AccessToken.objects.exists()


@pytest.fixture
def key_with_origins(tenant):
    api_key, _ = services.api_key_create(
        tenant=tenant, name="k", allowed_origins=["https://app.example.com", "*.example.org"]
    )
    return api_key


@pytest.mark.parametrize(
    ("token_origins", "stored"),
    [
        (["https://app.example.com"], ["https://app.example.com"]),
        (["https://shop.example.org"], ["https://shop.example.org"]),
        (["HTTPS://Shop.Example.org:443"], ["https://shop.example.org"]),
        (["*.eu.example.org"], ["*.eu.example.org"]),
        (
            ["https://app.example.com", "https://a.example.org"],
            ["https://app.example.com", "https://a.example.org"],
        ),
        ([], []),
        (None, []),
    ],
)
def test_token_origins_narrowing_the_key_are_accepted(key_with_origins, token_origins, stored):
    token, _ = services.access_token_issue(api_key=key_with_origins, allowed_origins=token_origins)
    assert AccessToken.objects.get(pk=token.pk).allowed_origins == stored


@pytest.mark.parametrize(
    "token_origins",
    [
        ["https://evil.test"],
        ["app.example.com"],  # any scheme: wider than https only
        ["https://app.example.com:8443"],
        ["https://example.org"],  # the apex is not within *.example.org
        ["*.example.com"],
        ["https://app.example.com", "https://evil.test"],
    ],
)
def test_token_origins_widening_the_key_are_refused(key_with_origins, token_origins):
    with pytest.raises(ValidationError) as excinfo:
        services.access_token_issue(api_key=key_with_origins, allowed_origins=token_origins)
    assert field_errors(excinfo) == {"allowed_origins"}
    assert not AccessToken.objects.exists()


@pytest.mark.parametrize("token_origins", [["javascript:alert(1)"], ["*"], "https://app.example.com"])
def test_malformed_token_origins_are_refused(key_with_origins, token_origins):
    with pytest.raises(ValidationError) as excinfo:
        services.access_token_issue(api_key=key_with_origins, allowed_origins=token_origins)
    assert field_errors(excinfo) == {"allowed_origins"}


def test_a_key_without_origin_allowlist_lets_a_token_choose_any_origins(api_key):
    token, _ = services.access_token_issue(api_key=api_key, allowed_origins=["https://anything.test"])
    assert token.allowed_origins == ["https://anything.test"]


def test_access_token_revoke_is_idempotent_and_audited_once(api_key):
    token, _ = services.access_token_issue(api_key=api_key)
    services.access_token_revoke(token=token, actor="test")
    first = AccessToken.objects.get(pk=token.pk).revoked_at
    services.access_token_revoke(token=AccessToken.objects.get(pk=token.pk), actor="test")
    assert first is not None and AccessToken.objects.get(pk=token.pk).revoked_at == first
    assert AuditEvent.objects.filter(action="access_token.revoked").count() == 1


# --- upstreams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8545",
        "http://localhost:6379",
        "http://10.0.0.1",
        "http://192.168.1.1/admin",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
    ],
)
def test_tenant_upstream_on_a_private_address_is_refused(tenant, base_url):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(tenant=tenant, slug="sneaky", base_url=base_url)
    assert field_errors(excinfo) == {"base_url"}
    assert not tenant.upstreams.exists()


@pytest.mark.parametrize("addresses", [["8.8.8.8", "10.0.0.1"], ["127.0.0.1"], []])
def test_tenant_upstream_whose_name_resolves_to_a_private_address_is_refused(tenant, addresses):
    dns = make_resolver({"api.example.com": addresses})
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant, slug="sneaky", base_url="https://api.example.com", resolve=dns
        )
    assert field_errors(excinfo) == {"base_url"}


def test_tenant_upstream_on_an_unresolvable_name_is_refused(tenant):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant, slug="nowhere", base_url="https://nowhere.example", resolve=make_resolver({})
        )
    assert field_errors(excinfo) == {"base_url"}


def test_tenant_upstream_on_a_public_address_is_created_and_audited(tenant, public_dns):
    upstream = services.upstream_create(
        tenant=tenant,
        slug="mainnet",
        base_url="HTTPS://rpc.example.com/v3/",
        actor="test",
        resolve=public_dns,
    )
    assert upstream.base_url == "https://rpc.example.com/v3" and upstream.tenant == tenant
    assert upstream.name == "mainnet"
    event = AuditEvent.objects.get(action="upstream.created")
    assert event.tenant == tenant and event.data == {
        "base_url": "https://rpc.example.com/v3",
        "auth_type": "none",
    }


def test_public_literal_address_needs_no_resolution(tenant):
    upstream = services.upstream_create(
        tenant=tenant, slug="direct", base_url=f"https://{PUBLIC_ADDRESS}/", resolve=make_resolver({})
    )
    assert upstream.base_url == f"https://{PUBLIC_ADDRESS}"


def test_non_staff_may_not_allow_a_private_network(tenant):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant, slug="lan", base_url="http://10.0.0.1", allow_private_network=True
        )
    assert "allow_private_network" in field_errors(excinfo)


def test_staff_may_allow_a_private_network_for_a_tenant(tenant):
    upstream = services.upstream_create(
        tenant=tenant,
        slug="lan",
        base_url="http://10.0.0.1:8545",
        allow_private_network=True,
        actor_is_staff=True,
    )
    assert upstream.allow_private_network and upstream.base_url == "http://10.0.0.1:8545"


def test_only_staff_create_global_upstreams(db):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(tenant=None, slug="global", base_url=f"https://{PUBLIC_ADDRESS}")
    assert "tenant" in field_errors(excinfo)
    assert (
        services.upstream_create(
            tenant=None, slug="global", base_url=f"https://{PUBLIC_ADDRESS}", actor_is_staff=True
        ).tenant
        is None
    )


def test_non_staff_may_not_switch_on_private_network_by_update(tenant_upstream):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_update(
            upstream=tenant_upstream, allow_private_network=True, base_url="http://10.0.0.1"
        )
    assert "allow_private_network" in field_errors(excinfo)
    tenant_upstream.refresh_from_db()
    assert not tenant_upstream.allow_private_network


def test_upstream_update_checks_the_new_url(tenant_upstream, public_dns):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_update(
            upstream=tenant_upstream, base_url="http://169.254.169.254", resolve=public_dns
        )
    assert field_errors(excinfo) == {"base_url"}


@pytest.mark.parametrize("field", ["tenant", "slug", "auth_value_encrypted", "created_at", "id"])
def test_upstream_fields_that_may_not_be_changed_are_refused(tenant_upstream, other_tenant, field):
    changes: dict[str, Any] = {field: other_tenant if field == "tenant" else "x"}
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_update(upstream=tenant_upstream, **changes)
    assert field in field_errors(excinfo)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        "gopher://8.8.8.8/",
        "https://u:p@8.8.8.8",
        "https://8.8.8.8/?k=1",
    ],
)
def test_upstream_url_other_than_plain_http_is_refused_even_for_staff(db, url):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=None, slug="bad", base_url=url, allow_private_network=True, actor_is_staff=True
        )
    assert "base_url" in field_errors(excinfo)


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"auth_type": AuthType.HEADER, "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.HEADER, "auth_name": "X-Key", "auth_value": ""}, "auth_value"),
        ({"auth_type": AuthType.HEADER, "auth_name": "X-Key\r\nEvil: 1", "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.HEADER, "auth_name": "X Key", "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.QUERY, "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.QUERY, "auth_name": "key&x=1", "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.BEARER, "auth_value": ""}, "auth_value"),
        ({"auth_type": AuthType.BASIC, "auth_name": "user", "auth_value": ""}, "auth_value"),
        ({"auth_type": "magic", "auth_value": "v"}, "auth_type"),
    ],
)
def test_upstream_auth_is_validated(tenant, public_dns, auth, field):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant, slug="paid", base_url="https://api.example.com", resolve=public_dns, **auth
        )
    assert field in field_errors(excinfo)


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"auth_type": AuthType.HEADER, "auth_name": "X-Key\n", "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.QUERY, "auth_name": "key\n", "auth_value": "v"}, "auth_name"),
        ({"auth_type": AuthType.HEADER, "auth_name": "X-Key", "auth_value": "v\r\n"}, "auth_value"),
        ({"auth_type": AuthType.BEARER, "auth_value": "tok\nX-Injected: 1"}, "auth_value"),
        ({"auth_type": AuthType.BASIC, "auth_name": "user\n", "auth_value": "pw"}, "auth_name"),
    ],
)
def test_upstream_auth_refuses_a_trailing_line_break_the_service_is_given(tenant, public_dns, auth, field):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant, slug="paid", base_url="https://api.example.com", resolve=public_dns, **auth
        )
    assert field_errors(excinfo) == {field}
    assert "X-Injected" not in str(excinfo.value)


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Cookie",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Request-Id",
    ],
)
def test_upstream_header_auth_may_not_claim_a_header_the_proxy_manages(tenant, public_dns, name):
    with pytest.raises(ValidationError) as excinfo:
        services.upstream_create(
            tenant=tenant,
            slug="paid",
            base_url="https://api.example.com",
            auth_type=AuthType.HEADER,
            auth_name=name,
            auth_value="v",
            resolve=public_dns,
        )
    assert field_errors(excinfo) == {"auth_name"}


@pytest.mark.parametrize(
    "auth",
    [
        {"auth_type": AuthType.BEARER, "auth_value": "bearer-credential-1"},
        {"auth_type": AuthType.BASIC, "auth_name": "user", "auth_value": "basic-password-2"},
        {"auth_type": AuthType.HEADER, "auth_name": "X-Api-Key", "auth_value": "header-credential-3"},
        {"auth_type": AuthType.QUERY, "auth_name": "apikey", "auth_value": "query-credential-4"},
    ],
)
def test_upstream_credential_is_stored_encrypted(tenant, public_dns, auth):
    upstream = services.upstream_create(
        tenant=tenant, slug="paid", base_url="https://api.example.com", resolve=public_dns, **auth
    )
    stored = upstream.__class__.objects.get(pk=upstream.pk)
    assert stored.has_credential
    assert stored.auth_value_encrypted != auth["auth_value"]
    assert auth["auth_value"] not in stored.auth_value_encrypted
    assert crypto.decrypt(stored.auth_value_encrypted) == auth["auth_value"]
    assert auth["auth_value"] not in str(AuditEvent.objects.get(action="upstream.created").data)


@pytest.fixture
def paid_upstream(tenant, public_dns):
    return services.upstream_create(
        tenant=tenant,
        slug="paid",
        base_url="https://api.example.com",
        auth_type=AuthType.HEADER,
        auth_name="X-Api-Key",
        auth_value="first-credential",
        resolve=public_dns,
    )


def test_upstream_update_without_auth_value_keeps_the_credential(paid_upstream, public_dns):
    services.upstream_update(upstream=paid_upstream, name="renamed", auth_value=None, resolve=public_dns)
    stored = paid_upstream.__class__.objects.get(pk=paid_upstream.pk)
    assert stored.name == "renamed"
    assert crypto.decrypt(stored.auth_value_encrypted) == "first-credential"
    event = AuditEvent.objects.get(action="upstream.updated")
    assert event.data == {"fields": ["name"]}


def test_upstream_update_with_auth_value_replaces_the_credential(paid_upstream, public_dns):
    services.upstream_update(upstream=paid_upstream, auth_value="second-credential", resolve=public_dns)
    stored = paid_upstream.__class__.objects.get(pk=paid_upstream.pk)
    assert crypto.decrypt(stored.auth_value_encrypted) == "second-credential"
    assert AuditEvent.objects.get(action="upstream.updated").data == {"fields": ["auth_value"]}


def test_upstream_update_to_no_auth_drops_the_credential(paid_upstream, public_dns):
    services.upstream_update(upstream=paid_upstream, auth_type=AuthType.NONE, resolve=public_dns)
    stored = paid_upstream.__class__.objects.get(pk=paid_upstream.pk)
    assert stored.auth_value_encrypted == "" and stored.auth_name == ""


def test_upstream_delete_is_audited(tenant_upstream):
    services.upstream_delete(upstream=tenant_upstream, actor="test")
    assert not tenant_upstream.__class__.objects.filter(slug="acme-api").exists()
    assert AuditEvent.objects.filter(action="upstream.deleted", target_id="acme-api").exists()


# --- management tokens ------------------------------------------------------------------------------


def test_management_token_create_returns_a_token_that_authenticates_for_its_tenant(tenant):
    token, clear = services.management_token_create(tenant=tenant, name="ci", actor="test")
    assert crypto.well_formed(clear, crypto.MANAGEMENT_TOKEN_PREFIX)
    stored = ManagementToken.objects.get(pk=token.pk)
    assert stored.token_hash == crypto.hash_secret(clear)
    assert stored.hint == clear[-4:]
    assert selectors.management_token_authenticate(token=clear) == stored
    authenticated = selectors.management_token_authenticate(token=clear)
    assert authenticated is not None
    assert authenticated.tenant == tenant
    assert AuditEvent.objects.filter(action="management_token.created", data={"name": "ci"}).exists()


def test_management_token_revoke_stops_it_and_is_idempotent(tenant):
    token, clear = services.management_token_create(tenant=tenant)
    services.management_token_revoke(token=token, actor="test")
    first = ManagementToken.objects.get(pk=token.pk).revoked_at
    services.management_token_revoke(token=ManagementToken.objects.get(pk=token.pk), actor="test")
    assert first is not None and ManagementToken.objects.get(pk=token.pk).revoked_at == first
    assert selectors.management_token_authenticate(token=clear) is None
    assert AuditEvent.objects.filter(action="management_token.revoked").count() == 1


def test_audit_record_labels_the_actor(tenant, member):
    by_user = services.audit_record(action="x", tenant=tenant, actor=member)
    by_command = services.audit_record(action="x", tenant=tenant, actor="create_tenant")
    by_nobody = services.audit_record(action="x", tenant=tenant)
    assert (by_user.actor, by_user.actor_label) == (member, member.get_username())
    assert (by_command.actor, by_command.actor_label) == (None, "create_tenant")
    assert (by_nobody.actor, by_nobody.actor_label) == (None, "system")


def test_an_update_audits_only_what_changed_and_nothing_when_nothing_did(api_key):
    services.api_key_update(api_key=api_key, name=api_key.name, rate_limit="10/m", actor="test")
    event = AuditEvent.objects.filter(action="api_key.updated").latest("pk")
    assert event.data == {"fields": ["rate_limit"]}
    services.api_key_update(api_key=api_key, name=api_key.name, rate_limit="10/m", actor="test")
    assert AuditEvent.objects.filter(action="api_key.updated").count() == 1


def test_an_upstream_update_saves_and_audits_only_the_fields_that_moved(loopback_upstream):
    services.upstream_update(
        upstream=loopback_upstream,
        timeout_seconds=loopback_upstream.timeout_seconds,
        name="renamed",
        actor="test",
        actor_is_staff=True,
    )
    event = AuditEvent.objects.filter(action="upstream.updated").latest("pk")
    assert event.data == {"fields": ["name"]}
    assert Upstream.objects.get(pk=loopback_upstream.pk).name == "renamed"
