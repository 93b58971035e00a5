"""Operator commands (DESIGN.md "Operator commands"): one JSON object on stdout, errors as CommandError."""

import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from keys import crypto, selectors, services
from keys.models import ApiKey, AuditEvent, Membership, Role, Tenant, Upstream


def run(*args: str) -> tuple[dict, str]:
    """Run a command; return the one JSON object it printed and the raw output."""
    out = StringIO()
    call_command(*args, stdout=out)
    text = out.getvalue()
    return json.loads(text), text


# --- create_tenant -----------------------------------------------------------------------------------


def test_create_tenant_prints_the_tenant_and_a_management_token_that_authenticates(db):
    payload, text = run("create_tenant", "initech", "--owner", "boss@initech.example")
    assert payload["tenant"] == "initech"
    assert payload["owner"] == "boss@initech.example"
    assert crypto.well_formed(payload["management_token"], crypto.MANAGEMENT_TOKEN_PREFIX)
    token = selectors.management_token_authenticate(token=payload["management_token"])
    assert token is not None and token.tenant.slug == "initech"
    membership = Membership.objects.get(tenant__slug="initech")
    assert membership.role == Role.OWNER and not membership.user.has_usable_password()
    assert text.count("{") == 1  # one JSON object, nothing else


def test_create_tenant_sets_the_display_name(db):
    run("create_tenant", "initech", "--owner", "boss@initech.example", "--name", "Initech Corp")
    assert Tenant.objects.get(slug="initech").name == "Initech Corp"


def test_create_tenant_refuses_a_duplicate_slug(tenant):
    with pytest.raises(CommandError, match="slug"):
        run("create_tenant", "acme", "--owner", "someone@else.example")
    assert Tenant.objects.filter(slug="acme").count() == 1


@pytest.mark.parametrize("email", ["not-an-email", "a@", "", "x y@z.example"])
def test_create_tenant_refuses_a_bad_email_and_leaves_nothing_behind(db, email):
    with pytest.raises(CommandError, match="email"):
        run("create_tenant", "initech", "--owner", email)
    assert not Tenant.objects.filter(slug="initech").exists()


@pytest.mark.parametrize("slug", ["Bad Slug", "-x", "x" * 51])
def test_create_tenant_refuses_a_bad_slug(db, slug):
    with pytest.raises(CommandError, match="slug"):
        run("create_tenant", slug, "--owner", "boss@initech.example")


def test_create_tenant_requires_an_owner(db):
    with pytest.raises(CommandError):
        run("create_tenant", "initech")


# --- create_upstream ---------------------------------------------------------------------------------


def test_create_upstream_prints_its_fields_without_the_credential(db):
    payload, text = run(
        "create_upstream",
        "paid",
        "https://8.8.8.8/v1/",
        "--auth-type",
        "header",
        "--auth-name",
        "X-Api-Key",
        "--auth-value",
        "upstream-credential-Kp39",
        "--timeout",
        "12",
    )
    assert "upstream-credential-Kp39" not in text
    upstream = Upstream.objects.get(slug="paid")
    assert upstream.auth_value_encrypted not in text
    assert payload == {
        "slug": "paid",
        "name": "paid",
        "base_url": "https://8.8.8.8/v1",
        "websocket_url": "",
        "auth": {"type": "header", "name": "X-Api-Key"},
        "timeout_seconds": 12,
        "is_active": True,
        "tenant": None,
        "allow_private_network": False,
    }
    assert crypto.decrypt(upstream.auth_value_encrypted) == "upstream-credential-Kp39"


def test_create_upstream_for_a_tenant(tenant):
    payload, _ = run("create_upstream", "acme-api", "https://8.8.8.8", "--tenant", "acme")
    assert payload["tenant"] == "acme"
    assert Upstream.objects.get(slug="acme-api").tenant == tenant


def test_create_upstream_for_an_unknown_tenant_fails(db):
    with pytest.raises(CommandError, match="nobody"):
        run("create_upstream", "x", "https://8.8.8.8", "--tenant", "nobody")
    assert not Upstream.objects.exists()


@pytest.mark.parametrize(
    "base_url",
    ["http://10.0.0.1", "http://127.0.0.1:8000", "http://169.254.169.254/", "http://[::1]", "http://127.1/"],
)
def test_create_upstream_refuses_a_private_address(tenant, base_url):
    with pytest.raises(CommandError, match="base_url"):
        run("create_upstream", "lan", base_url, "--tenant", "acme")
    assert not Upstream.objects.filter(slug="lan").exists()


@pytest.mark.parametrize(
    "auth, field",
    [
        (["--auth-type", "bearer", "--auth-value", "cmd-cred-Zq81\r\nX-Injected: 1"], "auth_value"),
        (["--auth-type", "header", "--auth-name", "X-Key", "--auth-value", "cmd-cred-Zq81\n"], "auth_value"),
        (["--auth-type", "header", "--auth-name", "Proxy-Authorization", "--auth-value", "v"], "auth_name"),
        (["--auth-type", "header", "--auth-name", "Authorization", "--auth-value", "v"], "auth_name"),
        (["--auth-type", "header", "--auth-name", "Upgrade", "--auth-value", "v"], "auth_name"),
    ],
)
def test_create_upstream_refuses_a_credential_the_proxy_could_not_send(db, auth, field):
    with pytest.raises(CommandError, match=field) as refused:
        run("create_upstream", "paid", "https://8.8.8.8", *auth)
    assert "cmd-cred-Zq81" not in str(refused.value)
    assert not Upstream.objects.filter(slug="paid").exists()


def test_create_upstream_on_a_private_network_when_allowed(tenant):
    payload, _ = run(
        "create_upstream", "lan", "http://10.0.0.1:8545", "--tenant", "acme", "--allow-private-network"
    )
    assert payload["allow_private_network"] is True
    assert Upstream.objects.get(slug="lan").allow_private_network


@pytest.mark.parametrize(
    "args",
    [
        ["bad", "javascript:alert(1)"],
        ["bad", "https://user:pw@8.8.8.8"],
        ["bad", "https://8.8.8.8", "--auth-type", "bearer"],
        ["bad", "https://8.8.8.8", "--auth-type", "header", "--auth-name", "Host", "--auth-value", "x"],
        ["Bad Slug", "https://8.8.8.8"],
        ["bad", "https://8.8.8.8", "--timeout", "0"],
    ],
)
def test_create_upstream_refuses_bad_values(db, args):
    with pytest.raises(CommandError):
        run("create_upstream", *args)
    assert not Upstream.objects.exists()


def test_create_upstream_refuses_a_duplicate_slug(loopback_upstream):
    with pytest.raises(CommandError, match="slug"):
        run("create_upstream", "local", "https://8.8.8.8")


# --- seed_demo ----------------------------------------------------------------------------------------


def test_seed_demo_prints_a_key_and_secret_that_validate(db):
    payload, _ = run("seed_demo")
    api_key = ApiKey.objects.get(key_id=payload["key"])
    assert api_key.tenant.slug == payload["tenant"] == "demo"
    assert selectors.api_key_secret_valid(api_key=api_key, secret=payload["secret"])
    upstream = Upstream.objects.get(slug=payload["upstream"])
    assert list(api_key.upstreams.all()) == [upstream]
    assert payload["allowed_origins"] == api_key.allowed_origins
    assert crypto.decrypt(upstream.auth_value_encrypted) not in json.dumps(payload)


def test_seed_demo_again_keeps_the_key_id_and_the_old_secret_stops_working(db):
    first, _ = run("seed_demo")
    second, _ = run("seed_demo")
    assert second["key"] == first["key"]
    assert second["secret"] != first["secret"]
    api_key = ApiKey.objects.get(key_id=first["key"])
    assert selectors.api_key_secret_valid(api_key=api_key, secret=second["secret"])
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=first["secret"])
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1


def test_seed_demo_prints_a_portal_login_for_the_demo_owner_fresh_each_run(db, client):
    first, _ = run("seed_demo")
    second, _ = run("seed_demo")
    owner = second["owner"]

    assert first["owner"]["password"] != owner["password"]
    stale = client.post("/portal/login", {"username": owner["email"], "password": first["owner"]["password"]})
    assert stale.status_code == 200  # the form again, with an error
    answer = client.post("/portal/login", {"username": owner["email"], "password": owner["password"]})
    assert answer.status_code == 302
    keys_page = client.get("/portal/keys").content.decode()
    assert second["key"] in keys_page and "Demo tenant" in keys_page
    # The demo address receives no mail: the seed vouches for it, so the owner may invite at once.
    assert "Confirm your e-mail" not in keys_page
    assert selectors.email_confirmed(user=get_user_model().objects.get(email=owner["email"]))


def test_seed_demo_uses_the_upstream_url_given(db):
    payload, _ = run("seed_demo", "--upstream-url", "http://127.0.0.1:9999/echo")
    assert payload["upstream_url"] == "http://127.0.0.1:9999/echo"
    assert Upstream.objects.get(slug=payload["upstream"]).base_url == "http://127.0.0.1:9999/echo"


def test_seed_demo_again_on_another_port_moves_the_demo_upstream_there(db):
    """`PORT=8001 make run` after a run on 8000: the demo echo is still this machine's."""
    run("seed_demo", "--upstream-url", "http://127.0.0.1:8000/demo/echo")
    payload, _ = run("seed_demo", "--upstream-url", "http://127.0.0.1:8001/demo/echo")
    upstream = Upstream.objects.get(slug=payload["upstream"])
    assert (upstream.base_url, upstream.allow_private_network) == ("http://127.0.0.1:8001/demo/echo", True)


# --- reencrypt_credentials ------------------------------------------------------------------------------


def test_reencrypt_credentials_moves_every_credential_to_the_first_key(tenant):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(KEYS_ENCRYPTION_KEYS=[old_key]):
        services.upstream_create(
            tenant=tenant, slug="paid", base_url="https://8.8.8.8", auth_type="bearer", auth_value="cred-1"
        )
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key, old_key]):
        payload, _ = run("reencrypt_credentials")
    assert payload == {"reencrypted": 1}
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key]):
        assert crypto.decrypt(Upstream.objects.get(slug="paid").auth_value_encrypted) == "cred-1"


def test_commands_record_who_acted(db):
    run("create_tenant", "initech", "--owner", "boss@initech.example")
    assert AuditEvent.objects.get(action="tenant.created").actor_label == "create_tenant"
