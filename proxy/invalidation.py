"""Dropping cached policies everywhere when a key, token, upstream or tenant changes.

keys.policy_changes.policy_changed fires after commit in the process that made the change: its own cache
is dropped at once, and the change is published on a Redis channel. Every process runs a listener
thread subscribed to that channel, which drops the same entries within milliseconds. The listener
also pings Redis several times a second and tells the policy cache each time Redis answered: while
answers stop (Redis down, a hung connection, reconnecting, or no Redis at all) the cache trusts its
entries for one second only, so a change whose publish was lost still reaches every process within
a second.
"""

import json
import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings

from keys.policy_changes import policy_changed
from proxy import metrics
from proxy.policy import CHANNEL_SILENCE, policies

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "keyportal:policy-changed"
PING_SECONDS = CHANNEL_SILENCE / 2  # a ping costs Redis little: measured locally, p99 0.2 ms, 4 a second
# A ping unanswered this long means a hung connection: start a new one (policies are short-lived by then).
RECONNECT_AFTER = 2.0
_listener: threading.Thread | None = None
_listener_lock = threading.Lock()


def _redis() -> "redis.Redis":
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def channel() -> str:
    """The pub/sub channel of this product's Redis database. Redis shares pub/sub between all its
    databases, so two deployments (or test runs) on one Redis server with different databases would
    otherwise drop each other's cached policies."""
    parts = urlsplit(settings.REDIS_URL)
    database = parts.path.strip("/") or dict(parse_qsl(parts.query)).get("db", "0")
    return f"{CHANNEL_PREFIX}:{database}"


def _subscriber_client() -> "redis.Redis":
    """A client of its own for the subscription: it waits for messages with get_message's timeout, so
    the socket timeout only bounds a reply cut in the middle."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def on_policy_changed(
    sender: object,
    *,
    key_ids: Collection[str] = (),  # read twice (dropped here, then published): not a one-shot iterator
    token_hashes: Collection[str] = (),
    upstreams_changed: bool = False,
    **kwargs: object,
) -> None:
    """Drop this process's entries now, and tell the other processes."""
    _drop(key_ids, token_hashes, upstreams_changed)
    if not settings.REDIS_URL:
        return
    message = json.dumps({"k": list(key_ids), "t": list(token_hashes), "u": bool(upstreams_changed)})
    try:
        _redis().publish(channel(), message)
    except Exception:  # noqa: BLE001 - other processes fall back to the one-second policy lifetime
        metrics.redis_errors.labels("policy_publish").inc()
        logger.warning("could not publish a policy change; other processes will see it within a second")


def _drop(key_ids: Iterable[str], token_hashes: Iterable[str], upstreams_changed: bool) -> None:
    policies.drop(key_ids=key_ids, token_hashes=token_hashes)
    if upstreams_changed:
        policies.upstreams.clear()


def _listen() -> None:
    push = policies.channel
    while True:
        pubsub = None
        try:
            pubsub = _subscriber_client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel())
            # Redis answers in order: the first pong proves the subscription is in place. No need to clear
            # the cache after a reconnection: entries loaded before it are trusted for a second only.
            pubsub.ping()
            pinged_at, answered_at = time.monotonic(), None
            while True:
                message = pubsub.get_message(timeout=PING_SECONDS)
                now = time.monotonic()
                if message is not None and message.get("type") == "pong":
                    push.answered(now)
                    answered_at = now
                elif message is not None and message.get("type") == "message":
                    change = json.loads(message["data"])
                    _drop(change.get("k", ()), change.get("t", ()), change.get("u", False))
                if answered_at is not None and answered_at >= pinged_at and now - pinged_at >= PING_SECONDS:
                    pubsub.ping()
                    pinged_at = now
                elif now - pinged_at > RECONNECT_AFTER:
                    raise TimeoutError("Redis did not answer a ping")
        except Exception as exc:  # noqa: BLE001 - reconnect after any failure
            push.lost()
            metrics.redis_errors.labels("policy_listen").inc()
            logger.warning(
                "policy change listener disconnected (%s); retrying in a second", type(exc).__name__
            )
            time.sleep(1.0)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001, S110 - closing a broken connection
                    pass


def start_listener() -> None:
    """Start this process's listener thread once (only with Redis; it is a daemon thread)."""
    global _listener
    if not settings.REDIS_URL or _listener is not None:
        return
    with _listener_lock:
        if _listener is None:
            _listener = threading.Thread(target=_listen, name="policy-listener", daemon=True)
            _listener.start()


def connect() -> None:
    policy_changed.connect(on_policy_changed, dispatch_uid="proxy.invalidation")
