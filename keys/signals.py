"""The model signals that turn any write which may change what the proxy decides (a service, the admin,
a command, a bulk update through the managers) into one `policy_changed` (keys/policy_changes.py).
"""

from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver

from keys.models import AccessToken, ApiKey, Tenant, Upstream
from keys.policy_changes import announce


@receiver([post_save, post_delete], sender=ApiKey)
def _api_key_changed(sender: type[ApiKey], instance: ApiKey, **kwargs: Any) -> None:
    announce(key_ids=[instance.key_id])


@receiver(m2m_changed, sender=ApiKey.upstreams.through)
def _api_key_upstreams_changed(
    sender: type[models.Model],
    instance: ApiKey | Upstream,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    # `reverse` is True exactly when `instance` is an Upstream; the isinstance tests say so to mypy too.
    if action == "pre_clear" and isinstance(instance, Upstream):
        # upstream.api_keys.clear() (reverse): no pk_set, and after it no links
        announce(key_ids=list(instance.api_keys.values_list("key_id", flat=True)))
    if not action.startswith("post_"):
        return
    if isinstance(instance, Upstream):  # reverse: the links changed from the upstream's side
        announce(key_ids=list(ApiKey.objects.filter(pk__in=pk_set or ()).values_list("key_id", flat=True)))
    else:
        announce(key_ids=[instance.key_id])


@receiver(post_save, sender=Upstream)
@receiver(pre_delete, sender=Upstream)  # before the cascade empties the key links
def _upstream_changed(sender: type[Upstream], instance: Upstream, **kwargs: Any) -> None:
    key_ids = ApiKey.objects.filter(upstreams__pk=instance.pk).values_list("key_id", flat=True)
    announce(key_ids=list(key_ids), upstreams_changed=True)


@receiver(post_save, sender=Tenant)
def _tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    announce(key_ids=list(instance.api_keys.values_list("key_id", flat=True)))


@receiver([post_save, post_delete], sender=AccessToken)
def _access_token_changed(sender: type[AccessToken], instance: AccessToken, **kwargs: Any) -> None:
    announce(token_hashes=[instance.token_hash])
