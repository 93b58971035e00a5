"""Reads (keys/selectors.py): tenant scoping, key states, and tokens checked at the moment of use."""

from datetime import timedelta

import pytest
from django.utils import timezone

from keys import crypto, selectors, services
from keys.models import AccessToken, ApiKey, Upstream, UsageRecord


@pytest.fixture
def two_tenants(tenant, other_tenant, member, tenant_upstream, other_tenant_upstream, loopback_upstream):
    """Both tenants with a key, a token, a management token, a usage record and audit events."""
    rows = {}
    for owner, upstream in ((tenant, tenant_upstream), (other_tenant, other_tenant_upstream)):
        api_key, _ = services.api_key_create(tenant=owner, name=f"{owner.slug} key", upstreams=[upstream])
        token, _ = services.access_token_issue(api_key=api_key)
        management_token, _ = services.management_token_create(tenant=owner)
        UsageRecord.objects.create(
            tenant=owner, api_key=api_key, hour=timezone.now().replace(minute=0), outcome="allowed", count=3
        )
        rows[owner.slug] = {"key": api_key, "token": token, "management_token": management_token}
    return rows


def test_api_key_list_returns_only_the_tenants_keys(tenant, two_tenants):
    assert list(selectors.api_key_list(tenant=tenant)) == [two_tenants["acme"]["key"]]


def test_api_key_get_finds_the_tenants_key(tenant, two_tenants):
    key = two_tenants["acme"]["key"]
    assert selectors.api_key_get(tenant=tenant, key_id=key.key_id) == key


def test_api_key_get_for_another_tenants_key_raises_does_not_exist(tenant, two_tenants):
    with pytest.raises(ApiKey.DoesNotExist):
        selectors.api_key_get(tenant=tenant, key_id=two_tenants["globex"]["key"].key_id)


def test_api_key_get_for_a_missing_key_raises_does_not_exist(tenant, two_tenants):
    with pytest.raises(ApiKey.DoesNotExist):
        selectors.api_key_get(tenant=tenant, key_id=crypto.new_key_id())


def test_upstream_list_holds_the_tenants_own_and_the_global_ones(
    tenant, two_tenants, tenant_upstream, loopback_upstream
):
    assert set(selectors.upstream_list(tenant=tenant)) == {tenant_upstream, loopback_upstream}


def test_upstream_list_owned_holds_only_the_tenants_own(tenant, two_tenants, tenant_upstream):
    assert list(selectors.upstream_list_owned(tenant=tenant)) == [tenant_upstream]


def test_upstream_get_finds_own_and_global_upstreams(tenant, tenant_upstream, loopback_upstream):
    assert selectors.upstream_get(tenant=tenant, slug="acme-api") == tenant_upstream
    assert selectors.upstream_get(tenant=tenant, slug="local") == loopback_upstream


def test_upstream_get_for_another_tenants_upstream_raises_does_not_exist(tenant, other_tenant_upstream):
    with pytest.raises(Upstream.DoesNotExist):
        selectors.upstream_get(tenant=tenant, slug=other_tenant_upstream.slug)


def test_access_token_list_returns_only_the_tenants_tokens(tenant, two_tenants):
    assert list(selectors.access_token_list(tenant=tenant)) == [two_tenants["acme"]["token"]]


def test_management_token_list_returns_only_the_tenants_tokens(tenant, two_tenants):
    assert list(selectors.management_token_list(tenant=tenant)) == [two_tenants["acme"]["management_token"]]


def test_audit_event_list_returns_only_the_tenants_events(tenant, other_tenant, two_tenants):
    events = list(selectors.audit_event_list(tenant=tenant))
    assert events and all(event.tenant_id == tenant.pk for event in events)
    assert {"tenant.created", "api_key.created", "management_token.created"} <= {e.action for e in events}
    assert selectors.audit_event_list(tenant=other_tenant).exists()


def test_usage_list_returns_only_the_tenants_records(tenant, two_tenants):
    records = list(selectors.usage_list(tenant=tenant))
    assert [record.api_key for record in records] == [two_tenants["acme"]["key"]]


def test_usage_list_for_another_tenants_key_is_empty(tenant, two_tenants):
    assert not selectors.usage_list(tenant=tenant, api_key=two_tenants["globex"]["key"]).exists()


def test_usage_list_since_drops_older_hours(tenant, two_tenants):
    assert selectors.usage_list(tenant=tenant, since=timezone.now() - timedelta(hours=2)).count() == 1
    assert selectors.usage_list(tenant=tenant, since=timezone.now() + timedelta(hours=2)).count() == 0


def test_membership_selectors_are_scoped(tenant, other_tenant, member):
    assert {m.user for m in selectors.membership_list(tenant=tenant)} == {
        member,
        tenant.memberships.get(role="owner").user,
    }
    assert selectors.membership_get(tenant=tenant, user=member) is not None
    assert selectors.membership_get(tenant=other_tenant, user=member) is None


def test_tenant_list_for_user_holds_only_their_tenants(tenant, other_tenant, member):
    assert list(selectors.tenant_list_for_user(user=member)) == [tenant]


# --- key states --------------------------------------------------------------------------------------


@pytest.fixture
def keys_in_every_state(tenant):
    now = timezone.now()
    active, _ = services.api_key_create(tenant=tenant, name="Web app")
    later, _ = services.api_key_create(
        tenant=tenant, name="expires later", expires_at=now + timedelta(days=1)
    )
    expired, _ = services.api_key_create(tenant=tenant, name="old web", expires_at=now - timedelta(seconds=1))
    revoked, _ = services.api_key_create(tenant=tenant, name="leaked")
    services.api_key_revoke(api_key=revoked)
    return {"active": active, "later": later, "expired": expired, "revoked": revoked}


@pytest.mark.parametrize(
    ("state", "names"),
    [
        ("active", {"active", "later"}),
        ("expired", {"expired"}),
        ("revoked", {"revoked"}),
        (None, {"active", "later", "expired", "revoked"}),
    ],
)
def test_api_key_list_filters_by_state(tenant, keys_in_every_state, state, names):
    keys = selectors.api_key_list(tenant=tenant, state=state)
    assert set(keys) == {keys_in_every_state[name] for name in names}
    if state:
        assert {key.state for key in keys} == {state}


def test_api_key_list_filters_by_name_case_insensitively(tenant, keys_in_every_state):
    keys = selectors.api_key_list(tenant=tenant, name="WEB")
    assert set(keys) == {keys_in_every_state["active"], keys_in_every_state["expired"]}


def test_api_key_secret_valid_refuses_another_keys_secret_and_malformed_ones(api_key_and_secret, tenant):
    api_key, secret = api_key_and_secret
    _, other_secret = services.api_key_create(tenant=tenant, name="other")
    assert selectors.api_key_secret_valid(api_key=api_key, secret=secret)
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=other_secret)
    for malformed in ["", secret[:-1], secret + "x", secret.upper(), None]:
        assert not selectors.api_key_secret_valid(api_key=api_key, secret=malformed)


# --- access tokens at use time -----------------------------------------------------------------------


def test_good_access_token_verifies(api_key):
    token, clear = services.access_token_issue(api_key=api_key)
    row, error = selectors.access_token_verify(token=clear)
    assert (row, error) == (token, None)
    assert row is not None
    assert row.api_key == api_key


def test_expired_token_refused_before_purge_runs(api_key):
    token, clear = services.access_token_issue(
        api_key=api_key, ttl=60, now=timezone.now() - timedelta(minutes=2)
    )
    row, error = selectors.access_token_verify(token=clear)
    assert error == "token_expired"
    assert AccessToken.objects.filter(pk=token.pk).exists()  # no purge has run


def test_token_is_refused_from_the_moment_it_expires(api_key):
    now = timezone.now()
    _, clear = services.access_token_issue(api_key=api_key, ttl=60, now=now)
    assert selectors.access_token_verify(token=clear, now=now + timedelta(seconds=59))[1] is None
    assert selectors.access_token_verify(token=clear, now=now + timedelta(seconds=60))[1] == "token_expired"


def test_revoked_token_refused(api_key):
    token, clear = services.access_token_issue(api_key=api_key)
    services.access_token_revoke(token=token)
    _, error = selectors.access_token_verify(token=clear)
    assert error == "invalid_token"


def test_unknown_well_formed_token_refused(api_key):
    assert selectors.access_token_verify(token=crypto.new_access_token()) == (None, "invalid_token")


def malformed_tokens() -> list:
    good = crypto.new_access_token()
    return [
        "",
        None,
        "at_",
        good[:-1],
        good + "0",
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        "sk_" + good[3:],
        crypto.new_secret(),
        crypto.new_management_token(),
        good.replace("at_", "AT_"),
        good[:10] + "é" + good[11:],
        "Bearer " + good,
        "' OR 1=1 --",
        "at_" + "A" * 10_000,
    ]


@pytest.mark.parametrize("token", malformed_tokens())
def test_malformed_token_refused_before_lookup(api_key, django_assert_num_queries, token):
    with django_assert_num_queries(0):
        assert selectors.access_token_verify(token=token) == (None, "invalid_token")


# --- management tokens ---------------------------------------------------------------------------------


def test_management_token_authenticates_to_its_tenant(tenant):
    token, clear = services.management_token_create(tenant=tenant)
    authenticated = selectors.management_token_authenticate(token=clear)
    assert authenticated == token and authenticated.tenant == tenant


def test_revoked_management_token_does_not_authenticate(tenant):
    token, clear = services.management_token_create(tenant=tenant)
    services.management_token_revoke(token=token)
    assert selectors.management_token_authenticate(token=clear) is None


def test_management_token_of_a_suspended_tenant_does_not_authenticate(tenant):
    _, clear = services.management_token_create(tenant=tenant)
    services.tenant_set_active(tenant=tenant, is_active=False)
    assert selectors.management_token_authenticate(token=clear) is None


def test_unknown_management_token_does_not_authenticate(tenant):
    assert selectors.management_token_authenticate(token=crypto.new_management_token()) is None


@pytest.mark.parametrize(
    "token",
    ["", None, "mt_", crypto.new_access_token(), "mt_" + "A" * 38, "Bearer " + crypto.new_management_token()],
)
def test_malformed_management_token_refused_before_lookup(db, django_assert_num_queries, token):
    with django_assert_num_queries(0):
        assert selectors.management_token_authenticate(token=token) is None
