"""A reload of the page that showed a secret sends its POST again: the key, the rotation or the token is
made once, and the repeat lands on the result without a second secret."""

import re

import pytest
from django.urls import reverse

from keys.models import ApiKey, ManagementToken, Role
from portal.tests.portal_helpers import found

ONCE_RE = re.compile(r'name="once" value="([^"]+)"')


def form_token(client, url: str) -> str:
    return found(ONCE_RE, client.get(url).content.decode(), 1)


def test_resending_the_create_form_makes_one_key(portal_client, loopback_upstream):
    client = portal_client(Role.DEVELOPER)
    url = reverse("portal:key_create")
    data = {"name": "web", "upstreams": ["local"], "once": form_token(client, url)}

    first = client.post(url, data)
    again = client.post(url, data, follow=True)

    key = ApiKey.objects.get()
    assert first.status_code == 200 and "sk_" in first.content.decode()
    assert again.redirect_chain == [(reverse("portal:key_detail", args=[key.key_id]), 302)]
    assert "sk_" not in again.content.decode() and "already created" in again.content.decode()


def test_resending_the_rotate_form_rotates_once(portal_client, api_key):
    client = portal_client(Role.DEVELOPER)
    url = reverse("portal:key_rotate", args=[api_key.key_id])
    data = {"grace": "0", "once": form_token(client, url)}

    first = client.post(url, data)
    secret_hash = ApiKey.objects.get(pk=api_key.pk).secret_hash
    again = client.post(url, data)

    assert first.status_code == 200 and "sk_" in first.content.decode()
    assert again.status_code == 302
    assert ApiKey.objects.get(pk=api_key.pk).secret_hash == secret_hash  # the shown secret still works


def test_resending_the_token_form_makes_one_token(portal_client):
    client = portal_client(Role.ADMIN)
    url = reverse("portal:token_create")
    data = {"name": "ci", "once": form_token(client, url)}

    client.post(url, data)
    again = client.post(url, data)

    assert ManagementToken.objects.count() == 1
    assert again.status_code == 302 and again["Location"] == reverse("portal:token_list")


@pytest.mark.parametrize("name", ["key_create", "token_create"])
def test_each_form_gets_its_own_token(portal_client, name):
    client = portal_client(Role.ADMIN)
    assert form_token(client, reverse(f"portal:{name}")) != form_token(client, reverse(f"portal:{name}"))


def test_a_second_key_from_a_fresh_form_is_made(portal_client, loopback_upstream):
    client = portal_client(Role.DEVELOPER)
    url = reverse("portal:key_create")
    for name in ("one", "two"):
        client.post(url, {"name": name, "upstreams": ["local"], "once": form_token(client, url)})
    assert sorted(ApiKey.objects.values_list("name", flat=True)) == ["one", "two"]
