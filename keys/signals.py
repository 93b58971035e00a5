"""`policy_changed`: sent after commit whenever a write may change what the proxy decides.

Whatever made the change (a service, the admin, a command, a bulk update through the managers),
the model signals below turn it into one `policy_changed`, which the proxy listens to in order to
drop its cached policies. Arguments: `key_ids` (the API keys whose policy changed),
`token_hashes` (access tokens that changed) and `upstreams_changed` (True: drop every cached
upstream; they are few, and a renamed slug must stop answering at once).
"""

from collections.abc import Iterable

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import Signal, receiver

from keys.models import AccessToken, ApiKey, Tenant, Upstream

policy_changed = Signal()


def announce(
    *, key_ids: Iterable[str] = (), token_hashes: Iterable[str] = (), upstreams_changed: bool = False
) -> None:
    """Send policy_changed once the current transaction commits (at once outside one)."""
    key_ids, token_hashes = list(key_ids), list(token_hashes)
    if key_ids or token_hashes or upstreams_changed:
        transaction.on_commit(
            lambda: policy_changed.send(
                sender=ApiKey, key_ids=key_ids, token_hashes=token_hashes, upstreams_changed=upstreams_changed
            )
        )


@receiver([post_save, post_delete], sender=ApiKey)
def _api_key_changed(sender, instance: ApiKey, **kwargs) -> None:
    announce(key_ids=[instance.key_id])


@receiver(m2m_changed, sender=ApiKey.upstreams.through)
def _api_key_upstreams_changed(sender, instance, action: str, reverse: bool, pk_set, **kwargs) -> None:
    if action == "pre_clear" and reverse:  # upstream.api_keys.clear(): no pk_set, and after it no links
        announce(key_ids=list(instance.api_keys.values_list("key_id", flat=True)))
    if not action.startswith("post_"):
        return
    if reverse:  # instance is an Upstream
        announce(key_ids=list(ApiKey.objects.filter(pk__in=pk_set or ()).values_list("key_id", flat=True)))
    else:
        announce(key_ids=[instance.key_id])


@receiver(post_save, sender=Upstream)
@receiver(pre_delete, sender=Upstream)  # before the cascade empties the key links
def _upstream_changed(sender, instance: Upstream, **kwargs) -> None:
    key_ids = ApiKey.objects.filter(upstreams__pk=instance.pk).values_list("key_id", flat=True)
    announce(key_ids=list(key_ids), upstreams_changed=True)


@receiver(post_save, sender=Tenant)
def _tenant_changed(sender, instance: Tenant, **kwargs) -> None:
    announce(key_ids=list(instance.api_keys.values_list("key_id", flat=True)))


@receiver([post_save, post_delete], sender=AccessToken)
def _access_token_changed(sender, instance: AccessToken, **kwargs) -> None:
    announce(token_hashes=[instance.token_hash])
