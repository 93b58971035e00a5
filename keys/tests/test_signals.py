"""policy_changed: sent after commit whenever a write may change what the proxy decides."""

from datetime import timedelta

import pytest
from django.db import transaction

from keys import services
from keys.models import AccessToken, ApiKey, Tenant, Upstream
from keys.policy_changes import policy_changed


@pytest.fixture
def announcements():
    """Every policy_changed sent during the test, as the keyword arguments it carried."""
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    policy_changed.connect(receiver, dispatch_uid="test-announcements")
    yield received
    policy_changed.disconnect(dispatch_uid="test-announcements")


def announced_keys(announcements) -> set[str]:
    return {key_id for sent in announcements for key_id in sent.get("key_ids", ())}


def announced_tokens(announcements) -> set[str]:
    return {token_hash for sent in announcements for token_hash in sent.get("token_hashes", ())}


def test_key_save_is_announced_after_commit(api_key, announcements, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.api_key_update(api_key=api_key, allowed_origins=["https://app.example.com"])
    assert announcements == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert announced_keys(announcements) == {api_key.key_id}


def test_nothing_is_announced_when_the_transaction_rolls_back(
    api_key, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                services.api_key_update(api_key=api_key, name="renamed")
                raise RuntimeError("rolled back")
    assert announcements == []


@pytest.mark.parametrize(
    "change",
    [
        lambda key: services.api_key_update(api_key=key, rate_limit="10/s"),
        lambda key: services.api_key_revoke(api_key=key),
        lambda key: services.api_key_rotate(api_key=key, grace=timedelta(0)),
        lambda key: key.delete(),
    ],
    ids=["update", "revoke", "rotate", "delete"],
)
def test_every_key_write_is_announced(api_key, announcements, django_capture_on_commit_callbacks, change):
    key_id = api_key.key_id
    with django_capture_on_commit_callbacks(execute=True):
        change(api_key)
    assert key_id in announced_keys(announcements)


def test_key_upstream_change_is_announced(
    api_key, tenant_upstream, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        api_key.upstreams.add(tenant_upstream)
    assert announced_keys(announcements) == {api_key.key_id}


@pytest.mark.parametrize(
    "change",
    [
        lambda key, upstream: key.upstreams.remove(upstream),
        lambda key, upstream: key.upstreams.clear(),
        lambda key, upstream: upstream.api_keys.remove(key),
        lambda key, upstream: upstream.api_keys.clear(),
    ],
    ids=["remove", "clear", "reverse-remove", "reverse-clear"],
)
def test_key_upstream_removal_from_either_side_is_announced(
    api_key, loopback_upstream, announcements, django_capture_on_commit_callbacks, change
):
    with django_capture_on_commit_callbacks(execute=True):
        change(api_key, loopback_upstream)
    assert api_key.key_id in announced_keys(announcements)


def test_key_upstream_change_from_the_upstream_side_is_announced(
    api_key, tenant_upstream, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        tenant_upstream.api_keys.add(api_key)
    assert announced_keys(announcements) == {api_key.key_id}


def test_upstream_change_is_announced_for_the_keys_that_use_it(
    tenant, api_key, loopback_upstream, announcements, django_capture_on_commit_callbacks
):
    unrelated, _ = services.api_key_create(tenant=tenant, name="no upstream")
    with django_capture_on_commit_callbacks(execute=True):
        services.upstream_update(upstream=loopback_upstream, timeout_seconds=5, actor_is_staff=True)
    assert api_key.key_id in announced_keys(announcements)
    assert unrelated.key_id not in announced_keys(announcements)


def test_upstream_delete_is_announced_for_the_keys_that_used_it(
    api_key, loopback_upstream, announcements, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.upstream_delete(upstream=loopback_upstream)
    assert api_key.key_id in announced_keys(announcements)


def test_tenant_change_is_announced_for_all_its_keys(
    tenant, other_tenant, api_key, announcements, django_capture_on_commit_callbacks
):
    second, _ = services.api_key_create(tenant=tenant, name="second")
    foreign, _ = services.api_key_create(tenant=other_tenant, name="foreign")
    with django_capture_on_commit_callbacks(execute=True):
        services.tenant_set_active(tenant=tenant, is_active=False)
    assert announced_keys(announcements) == {api_key.key_id, second.key_id}


@pytest.mark.parametrize(
    "change",
    [
        lambda token: services.access_token_revoke(token=token),
        lambda token: token.delete(),
    ],
    ids=["revoke", "delete"],
)
def test_token_change_is_announced(api_key, announcements, django_capture_on_commit_callbacks, change):
    token, _ = services.access_token_issue(api_key=api_key)
    with django_capture_on_commit_callbacks(execute=True):
        change(token)
    assert announced_tokens(announcements) == {token.token_hash}


def test_token_issue_is_announced(api_key, announcements, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        token, _ = services.access_token_issue(api_key=api_key)
    assert announced_tokens(announcements) == {token.token_hash}


@pytest.mark.parametrize(
    "bulk_update",
    [
        lambda key: ApiKey.objects.filter(pk=key.pk).update(secret_required=True),
        lambda key: Tenant.objects.filter(pk=key.tenant_id).update(is_active=False),
        lambda key: Upstream.objects.filter(api_keys=key).update(is_active=False),
    ],
    ids=["keys", "tenants", "upstreams"],
)
def test_bulk_updates_through_the_managers_are_announced(
    api_key, announcements, django_capture_on_commit_callbacks, bulk_update
):
    with django_capture_on_commit_callbacks(execute=True):
        bulk_update(api_key)
    assert api_key.key_id in announced_keys(announcements)


def test_bulk_token_update_is_announced(api_key, announcements, django_capture_on_commit_callbacks):
    token, _ = services.access_token_issue(api_key=api_key)
    with django_capture_on_commit_callbacks(execute=True):
        AccessToken.objects.filter(pk=token.pk).update(revoked_at=token.created_at)
    assert announced_tokens(announcements) == {token.token_hash}
