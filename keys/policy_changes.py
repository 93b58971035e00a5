"""`policy_changed`: sent after commit whenever a write may change what the proxy decides.

The proxy listens to it to drop its cached policies (proxy/invalidation.py); keys/signals.py and the
managers' bulk updates (keys/models.py) send it. Arguments: `key_ids` (the API keys whose policy
changed), `token_hashes` (access tokens that changed) and `upstreams_changed` (True: drop every cached
upstream; they are few, and a renamed slug must stop answering at once). This module imports no model,
so the models can announce without an import cycle.
"""

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

policy_changed = Signal()


def announce(
    *, key_ids: Iterable[str] = (), token_hashes: Iterable[str] = (), upstreams_changed: bool = False
) -> None:
    """Send policy_changed once the current transaction commits (at once outside one)."""
    key_ids, token_hashes = list(key_ids), list(token_hashes)
    if key_ids or token_hashes or upstreams_changed:
        transaction.on_commit(
            lambda: policy_changed.send(
                sender=None, key_ids=key_ids, token_hashes=token_hashes, upstreams_changed=upstreams_changed
            )
        )
