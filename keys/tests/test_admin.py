"""The Django admin: every page renders for staff and for nobody else; secrets are shown once, then never."""

from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from keys import crypto, selectors, services
from keys.models import (
    AccessToken,
    ApiKey,
    AuditEvent,
    AuthType,
    Membership,
    Role,
    Tenant,
    Upstream,
    UsageRecord,
)

MODELS = [
    "tenant",
    "membership",
    "upstream",
    "apikey",
    "accesstoken",
    "managementtoken",
    "usagerecord",
    "auditevent",
]
ADDABLE = ["tenant", "membership", "upstream", "apikey", "managementtoken"]
NOT_ADDABLE = ["accesstoken", "usagerecord", "auditevent"]
UPSTREAM_CREDENTIAL = "upstream-credential-7Hq2"


@pytest.fixture
def rows(tenant, member, api_key, loopback_upstream):
    """One row of every model, so every change page has something to show."""
    paid = services.upstream_create(
        tenant=tenant,
        slug="paid",
        base_url="https://8.8.8.8/v1",
        auth_type=AuthType.HEADER,
        auth_name="X-Api-Key",
        auth_value=UPSTREAM_CREDENTIAL,
    )
    token, _ = services.access_token_issue(api_key=api_key)
    management_token, _ = services.management_token_create(tenant=tenant)
    usage = UsageRecord.objects.create(
        tenant=tenant,
        api_key=api_key,
        hour=timezone.now().replace(minute=0, second=0),
        outcome="allowed",
        count=1,
    )
    return {
        "tenant": tenant,
        "membership": Membership.objects.get(tenant=tenant, user=member),
        "upstream": paid,
        "apikey": api_key,
        "accesstoken": token,
        "managementtoken": management_token,
        "usagerecord": usage,
        "auditevent": AuditEvent.objects.filter(tenant=tenant).first(),
    }


def admin_urls(rows) -> list[str]:
    urls = [reverse("admin:index")]
    urls += [reverse(f"admin:keys_{model}_changelist") for model in MODELS]
    urls += [reverse(f"admin:keys_{model}_add") for model in ADDABLE]
    urls += [reverse(f"admin:keys_{model}_change", args=[rows[model].pk]) for model in MODELS]
    return urls


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


# --- who may see the admin -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_changelist_renders_for_staff(staff_client, rows, model):
    response = staff_client.get(reverse(f"admin:keys_{model}_changelist"))
    assert response.status_code == 200
    assert rows[model] in response.context["cl"].result_list


@pytest.mark.parametrize("model", ADDABLE)
def test_add_page_renders_for_staff(staff_client, rows, model):
    assert staff_client.get(reverse(f"admin:keys_{model}_add")).status_code == 200


@pytest.mark.parametrize("model", NOT_ADDABLE)
def test_add_page_is_forbidden_where_rows_come_from_the_system(staff_client, rows, model):
    assert staff_client.get(reverse(f"admin:keys_{model}_add")).status_code == 403


@pytest.mark.parametrize("model", MODELS)
def test_change_page_renders_for_staff(staff_client, rows, model):
    assert staff_client.get(reverse(f"admin:keys_{model}_change", args=[rows[model].pk])).status_code == 200


@pytest.mark.parametrize("who", ["non_staff", "anonymous"])
def test_admin_redirects_everyone_but_staff_to_the_login(client, user, rows, who):
    if who == "non_staff":
        client.force_login(user)
    login = reverse("admin:login")
    for url in admin_urls(rows):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(login), url


def test_non_staff_cannot_post_to_the_admin(client, user, rows):
    client.force_login(user)
    response = client.post(
        reverse("admin:keys_apikey_changelist"), {"action": "revoke", "_selected_action": [rows["apikey"].pk]}
    )
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=rows["apikey"].pk).revoked_at is None


# --- API keys: the secret shown once -------------------------------------------------------------------


def key_form(tenant, upstreams, **overrides) -> dict:
    data = {
        "tenant": tenant.pk,
        "name": "admin key",
        "upstreams": [u.pk for u in upstreams],
        "allowed_origins": '["HTTPS://App.Example.com:443"]',
        "allowed_ips": "[]",
        "allowed_user_agents": "[]",
        "allowed_http_methods": "[]",
        "allowed_rpc_methods": "[]",
        "rate_limit": "",
        "daily_quota": "",
        "expires_at_0": "",
        "expires_at_1": "",
    }
    return {**data, **overrides}


def shown_secret(response) -> str:
    content = response.content.decode()
    secrets = [word for word in content.replace("<", " ").replace(">", " ").split() if word.startswith("sk_")]
    assert len(secrets) == 1, secrets
    return secrets[0]


def test_add_key_shows_the_secret_exactly_once_then_never(staff_client, tenant, loopback_upstream):
    response = staff_client.post(reverse("admin:keys_apikey_add"), key_form(tenant, [loopback_upstream]))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = shown_secret(response)
    assert crypto.well_formed(secret, crypto.SECRET_PREFIX)
    assert response.content.decode().count(secret) == 1

    api_key = ApiKey.objects.get(name="admin key")
    assert selectors.api_key_secret_valid(api_key=api_key, secret=secret)
    assert api_key.tenant == tenant and api_key.created_by is not None
    assert list(api_key.upstreams.all()) == [loopback_upstream]
    assert api_key.allowed_origins == ["https://app.example.com"]
    assert AuditEvent.objects.filter(action="api_key.created", target_id=api_key.key_id).exists()

    for url in (
        reverse("admin:keys_apikey_change", args=[api_key.pk]),
        reverse("admin:keys_apikey_changelist"),
        reverse("admin:keys_auditevent_changelist"),
    ):
        page = staff_client.get(url).content.decode()
        assert api_key.key_id in page or "auditevent" in url
        assert secret not in page
        assert api_key.secret_hash not in page


def test_add_key_with_bad_values_shows_form_errors(staff_client, tenant, loopback_upstream):
    form = key_form(tenant, [loopback_upstream], allowed_origins='["javascript:alert(1)"]', rate_limit="0/m")
    response = staff_client.post(reverse("admin:keys_apikey_add"), form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"allowed_origins", "rate_limit"} <= set(errors)
    assert not ApiKey.objects.filter(name="admin key").exists()


def test_add_key_with_another_tenants_upstream_shows_a_form_error(staff_client, tenant, other_tenant):
    foreign = services.upstream_create(tenant=other_tenant, slug="foreign", base_url="https://8.8.8.8")
    response = staff_client.post(reverse("admin:keys_apikey_add"), key_form(tenant, [foreign]))
    assert response.status_code == 200
    assert "upstreams" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="admin key").exists()


def test_change_key_through_the_admin_keeps_its_secret_and_tenant(
    staff_client, api_key_and_secret, other_tenant
):
    api_key, secret = api_key_and_secret
    form = key_form(other_tenant, [], name="renamed", allowed_ips='["203.0.113.0/24"]')
    response = staff_client.post(reverse("admin:keys_apikey_change", args=[api_key.pk]), form)
    assert response.status_code == 302
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert stored.name == "renamed" and stored.allowed_ips == ["203.0.113.0/24"]
    assert stored.tenant == api_key.tenant  # read-only once chosen
    assert selectors.api_key_secret_valid(api_key=stored, secret=secret)


def test_revoke_action_revokes_the_selected_keys(staff_client, tenant, api_key):
    spared, _ = services.api_key_create(tenant=tenant, name="spared")
    response = staff_client.post(
        reverse("admin:keys_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=api_key.pk).state == "revoked"
    assert ApiKey.objects.get(pk=spared.pk).state == "active"
    assert AuditEvent.objects.filter(action="api_key.revoked", target_id=api_key.key_id).exists()


def test_rotate_action_shows_the_new_secret_once_and_kills_the_old(staff_client, api_key_and_secret):
    api_key, old_secret = api_key_and_secret
    response = staff_client.post(
        reverse("admin:keys_apikey_changelist"), {"action": "rotate_now", "_selected_action": [api_key.pk]}
    )
    assert response.status_code == 200
    new_secret = shown_secret(response)
    stored = ApiKey.objects.get(pk=api_key.pk)
    assert selectors.api_key_secret_valid(api_key=stored, secret=new_secret)
    assert not selectors.api_key_secret_valid(api_key=stored, secret=old_secret)


def test_rotate_action_refuses_more_than_one_key(staff_client, tenant, api_key):
    second, _ = services.api_key_create(tenant=tenant, name="second")
    hashes = dict(ApiKey.objects.values_list("pk", "secret_hash"))
    response = staff_client.post(
        reverse("admin:keys_apikey_changelist"),
        {"action": "rotate_now", "_selected_action": [api_key.pk, second.pk]},
        follow=True,
    )
    assert "one key at a time" in response.content.decode()
    assert dict(ApiKey.objects.values_list("pk", "secret_hash")) == hashes


# --- upstreams: credentials are write-only --------------------------------------------------------------


def upstream_form(**overrides) -> dict:
    data = {
        "tenant": "",
        "slug": "admin-upstream",
        "name": "",
        "base_url": "https://8.8.8.8/v1",
        "auth_type": "none",
        "auth_name": "",
        "auth_value": "",
        "timeout_seconds": "30",
        "is_active": "on",
    }
    return {**data, **overrides}


def test_upstream_change_page_never_shows_the_credential(staff_client, rows):
    upstream = rows["upstream"]
    page = staff_client.get(reverse("admin:keys_upstream_change", args=[upstream.pk])).content.decode()
    assert UPSTREAM_CREDENTIAL not in page
    assert upstream.auth_value_encrypted not in page
    assert upstream.auth_value_encrypted[:20] not in page
    listing = staff_client.get(reverse("admin:keys_upstream_changelist")).content.decode()
    assert UPSTREAM_CREDENTIAL not in listing and upstream.auth_value_encrypted[:20] not in listing


def test_upstream_added_in_the_admin_stores_the_credential_encrypted(staff_client, tenant):
    form = upstream_form(
        tenant=tenant.pk, auth_type="header", auth_name="X-Api-Key", auth_value=UPSTREAM_CREDENTIAL
    )
    response = staff_client.post(reverse("admin:keys_upstream_add"), form)
    assert response.status_code == 302
    upstream = Upstream.objects.get(slug="admin-upstream")
    assert upstream.tenant == tenant and upstream.base_url == "https://8.8.8.8/v1"
    assert crypto.decrypt(upstream.auth_value_encrypted) == UPSTREAM_CREDENTIAL
    assert AuditEvent.objects.filter(action="upstream.created", target_id="admin-upstream").exists()


def test_upstream_saved_in_the_admin_without_a_value_keeps_the_credential(staff_client, rows):
    upstream = rows["upstream"]
    form = upstream_form(
        tenant=upstream.tenant_id,
        slug=upstream.slug,
        name="renamed",
        auth_type="header",
        auth_name="X-Api-Key",
        base_url=upstream.base_url,
    )
    response = staff_client.post(reverse("admin:keys_upstream_change", args=[upstream.pk]), form)
    assert response.status_code == 302
    stored = Upstream.objects.get(pk=upstream.pk)
    assert stored.name == "renamed"
    assert crypto.decrypt(stored.auth_value_encrypted) == UPSTREAM_CREDENTIAL


@pytest.mark.parametrize(
    "base_url", ["http://10.0.0.1", "http://127.0.0.1:8000", "http://169.254.169.254/latest", "http://[::1]/"]
)
def test_upstream_admin_add_on_a_private_address_shows_a_form_error(staff_client, tenant, base_url):
    response = staff_client.post(
        reverse("admin:keys_upstream_add"), upstream_form(tenant=tenant.pk, base_url=base_url)
    )
    assert response.status_code == 200
    assert "base_url" in response.context["adminform"].form.errors
    assert not Upstream.objects.filter(slug="admin-upstream").exists()


def test_upstream_admin_add_on_a_private_address_is_allowed_when_staff_ticks_it(staff_client, tenant):
    form = upstream_form(tenant=tenant.pk, base_url="http://10.0.0.1", allow_private_network="on")
    assert staff_client.post(reverse("admin:keys_upstream_add"), form).status_code == 302
    assert Upstream.objects.get(slug="admin-upstream").allow_private_network


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"base_url": "javascript:alert(1)"}, "base_url"),
        ({"base_url": "https://user:pw@8.8.8.8"}, "base_url"),
        ({"auth_type": "header", "auth_name": "Host", "auth_value": "x"}, "auth_name"),
        ({"auth_type": "bearer"}, "auth_value"),
        ({"auth_type": "bearer", "auth_value": "admin-cred\r\nX-Injected: 1"}, "auth_value"),
        ({"auth_type": "header", "auth_name": "Proxy-Authorization", "auth_value": "x"}, "auth_name"),
        ({"auth_type": "header", "auth_name": "Keep-Alive", "auth_value": "x"}, "auth_name"),
    ],
)
def test_upstream_admin_shows_validation_errors_by_field(staff_client, overrides, field):
    response = staff_client.post(reverse("admin:keys_upstream_add"), upstream_form(**overrides))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors


# --- tokens -----------------------------------------------------------------------------------------------


def test_access_token_revoke_action(staff_client, api_key):
    token, clear = services.access_token_issue(api_key=api_key)
    response = staff_client.post(
        reverse("admin:keys_accesstoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    assert AccessToken.objects.get(pk=token.pk).revoked_at is not None
    assert selectors.access_token_verify(token=clear)[1] == "invalid_token"


def test_management_token_add_shows_the_token_once(staff_client, tenant):
    response = staff_client.post(
        reverse("admin:keys_managementtoken_add"), {"tenant": tenant.pk, "name": "ci"}
    )
    assert response.status_code == 200
    content = response.content.decode()
    clear = [w for w in content.replace("<", " ").replace(">", " ").split() if w.startswith("mt_")]
    assert len(clear) == 1
    token = selectors.management_token_authenticate(token=clear[0])
    assert token is not None and token.tenant == tenant and token.name == "ci"
    page = staff_client.get(reverse("admin:keys_managementtoken_change", args=[token.pk])).content.decode()
    assert clear[0] not in page and token.token_hash not in page


def test_management_token_revoke_action(staff_client, tenant):
    token, clear = services.management_token_create(tenant=tenant)
    response = staff_client.post(
        reverse("admin:keys_managementtoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    assert selectors.management_token_authenticate(token=clear) is None


def test_tenant_suspend_action(staff_client, tenant):
    response = staff_client.post(
        reverse("admin:keys_tenant_changelist"), {"action": "suspend", "_selected_action": [tenant.pk]}
    )
    assert response.status_code == 302
    assert not Tenant.objects.get(pk=tenant.pk).is_active


# --- the audit trail is read-only ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [AuditEvent, UsageRecord])
def test_system_records_have_no_add_change_or_delete_permission(staff_user, model):
    request = RequestFactory().get("/admin/")
    request.user = staff_user
    model_admin = site._registry[model]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    assert model_admin.has_view_permission(request)


def test_audit_events_cannot_be_edited_or_deleted_through_the_admin(staff_client, rows):
    event = rows["auditevent"]
    before = AuditEvent.objects.filter(pk=event.pk).values().get()
    change = reverse("admin:keys_auditevent_change", args=[event.pk])
    response = staff_client.post(
        change, {"action": "tampered", "target_id": "x", "actor_label": "x", "data": "{}"}
    )
    assert response.status_code == 403
    assert (
        staff_client.post(
            reverse("admin:keys_auditevent_delete", args=[event.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    response = staff_client.post(
        reverse("admin:keys_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": [event.pk]},
    )
    assert AuditEvent.objects.filter(pk=event.pk).values().get() == before
    assert "tampered" not in staff_client.get(change).content.decode()


def test_audit_event_view_page_has_no_save_button(staff_client, rows):
    page = staff_client.get(
        reverse("admin:keys_auditevent_change", args=[rows["auditevent"].pk])
    ).content.decode()
    assert 'name="_save"' not in page


def test_key_expiring_is_listed_by_state(staff_client, tenant):
    services.api_key_create(tenant=tenant, name="gone", expires_at=timezone.now() - timedelta(days=1))
    services.api_key_create(tenant=tenant, name="alive")
    page = staff_client.get(reverse("admin:keys_apikey_changelist") + "?state=expired").content.decode()
    assert "gone" in page and "alive" not in page


# --- the admin login: limited like the portal's -------------------------------------------------------

BALANCER = "10.0.0.5"


def admin_login(client, username: str, password: str, address: str | None = None):
    """POST the admin's real login form, with the CSRF token its page set (as a browser would)."""
    login = reverse("admin:login")
    extra = {"HTTP_X_FORWARDED_FOR": address} if address else {}
    client.get(login, **extra)
    token = client.cookies["csrftoken"].value
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    return client.post(login, data, **extra)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture
def behind_balancer(settings):
    settings.PROXY_TRUSTED_PROXIES = [f"{BALANCER}/32"]
    return Client(enforce_csrf_checks=True, REMOTE_ADDR=BALANCER)


@pytest.mark.usefixtures("fresh_rate_limits")
def test_thirty_wrong_passwords_then_the_right_one_does_not_sign_in(staff_user, settings):
    settings.ADMIN_LOGIN_RATE = "10/m"
    client = Client(enforce_csrf_checks=True)
    for _ in range(30):
        assert admin_login(client, "staff", "wrong").status_code == 200
    response = admin_login(client, "staff", "pw")
    assert response.status_code == 200 and not signed_in(client)
    assert "Too many login attempts" in response.content.decode()
    assert client.get(reverse("admin:index")).status_code == 302


@pytest.mark.usefixtures("fresh_rate_limits")
def test_within_the_limit_the_right_password_signs_in(staff_user, settings):
    settings.ADMIN_LOGIN_RATE = "3/m"
    client = Client(enforce_csrf_checks=True)
    admin_login(client, "staff", "wrong")
    assert admin_login(client, "staff", "pw").status_code == 302 and signed_in(client)


@pytest.mark.usefixtures("fresh_rate_limits")
def test_admin_login_is_limited_per_username_whatever_the_address(staff_user, behind_balancer, settings):
    settings.ADMIN_LOGIN_RATE = "3/m"
    for n in range(3):
        admin_login(behind_balancer, "staff", "wrong", address=f"198.51.100.{n + 1}")
    admin_login(behind_balancer, "staff", "pw", address="198.51.100.99")
    assert not signed_in(behind_balancer)


@pytest.mark.usefixtures("fresh_rate_limits")
def test_admin_login_is_limited_per_client_address_by_the_trusted_proxy_rule(
    staff_user, behind_balancer, settings
):
    settings.ADMIN_LOGIN_RATE = "3/m"
    for n in range(3):
        admin_login(behind_balancer, f"guess{n}", "wrong", address="203.0.113.7")
    admin_login(behind_balancer, "staff", "pw", address="203.0.113.7")
    assert not signed_in(behind_balancer)
    # Every visitor reaches the site through the same balancer: another client is not limited.
    other = Client(enforce_csrf_checks=True, REMOTE_ADDR=BALANCER)
    assert admin_login(other, "staff", "pw", address="192.0.2.44").status_code == 302
    assert signed_in(other)


def test_the_admins_view_site_link_goes_to_the_portal(staff_client):
    page = staff_client.get(reverse("admin:index"))
    assert page.context["site_url"] == reverse("portal:home") == "/portal/"
    assert 'href="/portal/"' in page.content.decode()


# --- memberships through the services, with the client's address ------------------------------------

CLIENT = "203.0.113.50"


@pytest.fixture
def staff_behind_balancer(staff_user, settings):
    """Staff signed in to the admin, reaching the site through a trusted load balancer."""
    settings.PROXY_TRUSTED_PROXIES = [f"{BALANCER}/32"]
    client = Client(REMOTE_ADDR=BALANCER, HTTP_X_FORWARDED_FOR=CLIENT)
    client.force_login(staff_user)
    return client


def only_owner(tenant) -> Membership:
    return Membership.objects.get(tenant=tenant, role=Role.OWNER)


def test_admin_adds_a_membership_through_the_service_with_the_clients_address(
    staff_behind_balancer, tenant, user
):
    response = staff_behind_balancer.post(
        reverse("admin:keys_membership_add"), {"tenant": tenant.pk, "user": user.pk, "role": "developer"}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.DEVELOPER
    event = AuditEvent.objects.get(action="member.added", tenant=tenant, data__user=user.username)
    assert event.ip_address == CLIENT and event.actor_label == "staff"


def test_admin_changes_a_role_through_the_service_with_the_clients_address(
    staff_behind_balancer, tenant, member
):
    membership = Membership.objects.get(tenant=tenant, user=member)
    response = staff_behind_balancer.post(
        reverse("admin:keys_membership_change", args=[membership.pk]), {"role": "admin"}
    )
    assert response.status_code == 302
    assert Membership.objects.get(pk=membership.pk).role == Role.ADMIN
    assert AuditEvent.objects.get(action="member.role_changed", tenant=tenant).ip_address == CLIENT


def test_admin_cannot_demote_the_only_owner(staff_behind_balancer, tenant):
    owner = only_owner(tenant)
    url = reverse("admin:keys_membership_change", args=[owner.pk])
    response = staff_behind_balancer.post(url, {"role": "viewer"}, follow=True)
    assert response.status_code == 200
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.get(pk=owner.pk).role == Role.OWNER
    assert not AuditEvent.objects.filter(action="member.role_changed").exists()


def test_admin_cannot_remove_the_only_owner(staff_behind_balancer, tenant):
    owner = only_owner(tenant)
    url = reverse("admin:keys_membership_delete", args=[owner.pk])
    response = staff_behind_balancer.post(url, {"post": "yes"}, follow=True)
    assert "at least one owner" in response.content.decode()
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_admin_removes_a_member_through_the_service_with_the_clients_address(
    staff_behind_balancer, tenant, member
):
    membership = Membership.objects.get(tenant=tenant, user=member)
    url = reverse("admin:keys_membership_delete", args=[membership.pk])
    assert staff_behind_balancer.post(url, {"post": "yes"}).status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert AuditEvent.objects.get(action="member.removed", tenant=tenant).ip_address == CLIENT


def test_the_tenant_pages_members_are_read_only(staff_client, tenant, member):
    inline = staff_client.get(reverse("admin:keys_tenant_change", args=[tenant.pk])).context[
        "inline_admin_formsets"
    ]
    memberships = next(formset for formset in inline if formset.formset.model is Membership)
    assert not memberships.has_add_permission and not memberships.has_change_permission
    assert not memberships.has_delete_permission


def test_other_admin_changes_record_the_clients_address_not_the_balancers(
    staff_behind_balancer, tenant, api_key, loopback_upstream
):
    staff_behind_balancer.post(
        reverse("admin:keys_tenant_changelist"), {"action": "suspend", "_selected_action": [tenant.pk]}
    )
    staff_behind_balancer.post(
        reverse("admin:keys_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )
    staff_behind_balancer.post(
        reverse("admin:keys_managementtoken_add"), {"tenant": tenant.pk, "name": "ops"}
    )
    token = tenant.management_tokens.get(name="ops")
    staff_behind_balancer.post(
        reverse("admin:keys_managementtoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    staff_behind_balancer.post(
        reverse("admin:keys_upstream_delete", args=[loopback_upstream.pk]), {"post": "yes"}
    )
    for action in (
        "tenant.suspended",
        "api_key.revoked",
        "management_token.created",
        "management_token.revoked",
        "upstream.deleted",
    ):
        assert AuditEvent.objects.get(action=action).ip_address == CLIENT, action


def test_a_service_refusal_in_the_admin_is_a_message_not_a_500(staff_client, tenant, settings):
    settings.KEYS_MAX_MANAGEMENT_TOKENS_PER_TENANT = 0
    response = staff_client.post(
        reverse("admin:keys_managementtoken_add"), {"tenant": tenant.pk, "name": "ops"}, follow=True
    )
    assert response.status_code == 200 and "limit of 0" in response.content.decode()
    assert not tenant.management_tokens.exists()
