"""Usage counting off the hot path: per key, per minute, by outcome, rejection code and detail.

A request only increments a counter in process memory. A background thread flushes the counters
to Redis every PROXY_USAGE_FLUSH_SECONDS (one pipelined round trip), and at exit; the roll-up job
moves them into the database. Each key's `last_used_at` is written at most once a minute across
all processes (a Redis SET NX guards it), by the flusher, never by the request.
Without Redis (the embedded default) the counters are flushed into an in-process store instead.
A rejection's detail (what it refused: an origin, a user agent...) is request text an attacker
chooses, so it is cleaned and cut to length, and each key counts at most DETAILS_PER_KEY_MINUTE
distinct ones a minute in a process; the rest are counted under OTHER_DETAIL.
The store's format and the local store live in keys/usage/store.py, which the roll-up reads.
"""

import atexit
import logging
import multiprocessing.util
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from keys.usage.store import (
    ALLOWED,
    DETAILS_PER_KEY_MINUTE,
    LAST_USED_INTERVAL,
    OTHER_DETAIL,
    REJECTED,
    UPSTREAM_ERROR,
    USAGE_RETENTION_SECONDS,
    LocalUsageStore,
    local_store,
    usage_detail,
    usage_field,
    usage_key,
)

# The store's contract (key and field formats, the local store) belongs to keys, whose roll-up reads it.
from proxy import metrics
from proxy.lazy import lazy

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED",
    "REJECTED",
    "UPSTREAM_ERROR",
    "LocalUsageStore",
    "RedisUsageStore",
    "UsageCounter",
    "usage",
]


# One counter: (minute, key_id, outcome, rejection code, detail).
Bucket = tuple[int, str, str, str, str]


class UsageStore(Protocol):
    """Where flushed counts go: Redis (RedisUsageStore) or this process (keys.usage.store.LocalUsageStore)."""

    def add(self, counts: dict[Bucket, int], used_key_ids: set[str], now: float) -> list[str]:
        """Add the counts; returns the keys whose last_used_at is due for an update."""
        ...


class RedisUsageStore:
    def __init__(self) -> None:
        from django_redis import get_redis_connection

        self._client = get_redis_connection("default")

    def add(self, counts: dict[Bucket, int], used_key_ids: set[str], now: float) -> list[str]:
        pipe = self._client.pipeline(transaction=False)
        for (minute, key_id, outcome, code, detail), count in counts.items():
            name = usage_key(minute)
            pipe.hincrby(name, usage_field(key_id, outcome, code, detail), count)
            pipe.expire(name, USAGE_RETENTION_SECONDS)
        ordered = sorted(used_key_ids)
        for key_id in ordered:
            pipe.set(f"lastused:{key_id}", "1", nx=True, ex=LAST_USED_INTERVAL)
        results = pipe.execute()
        won = results[len(results) - len(ordered) :] if ordered else []
        return [key_id for key_id, was_set in zip(ordered, won, strict=True) if was_set]


class UsageCounter:
    def __init__(self, store: UsageStore) -> None:
        self.store = store
        self._counts: Counter[Bucket] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.flush_failures = 0
        # The (code, detail) pairs counted this minute, per key: what bounds the distinct details.
        self._details_minute = 0
        self._details: dict[str, set[tuple[str, str]]] = {}

    def count(self, key_id: str, outcome: str, code: str = "", detail: str = "") -> None:
        """Count one request; costs a dictionary increment (and, for a detail, a cleaning and a set
        lookup)."""
        minute = int(time.time() // 60) * 60
        if detail:  # a rejection's: cleaned outside the lock, bounded under it
            detail = usage_detail(detail)
            with self._lock:
                bucket = (minute, key_id, outcome, code, self._bounded(minute, key_id, code, detail))
                self._counts[bucket] += 1
        else:
            with self._lock:
                self._counts[(minute, key_id, outcome, code, "")] += 1
        if self._thread is None and settings.PROXY_USAGE_FLUSH_SECONDS > 0:
            self._start()

    def _bounded(self, minute: int, key_id: str, code: str, detail: str) -> str:
        """The detail, or OTHER_DETAIL once the key has counted its share of distinct ones this
        minute (under the lock)."""
        if minute != self._details_minute:
            self._details_minute, self._details = minute, {}
        seen = self._details.setdefault(key_id, set())
        if (code, detail) in seen:
            return detail
        if len(seen) >= DETAILS_PER_KEY_MINUTE:
            return OTHER_DETAIL
        seen.add((code, detail))
        return detail

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
            self._thread.start()
        # Flush what is left at exit: atexit for a plain process, a multiprocessing finaliser for a
        # server's worker process (multiprocessing children leave through os._exit, skipping atexit).
        atexit.register(self.flush)
        multiprocessing.util.Finalize(self, self.flush, exitpriority=10)

    def _run(self) -> None:
        while True:
            time.sleep(settings.PROXY_USAGE_FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        """Move the counted usage to the store and touch last_used_at of the keys used."""
        with self._lock:
            counts, self._counts = self._counts, Counter[Bucket]()
        now = time.time()
        if not counts:
            metrics.usage_flushed(True, now)  # nothing waits: not late
            return
        try:
            due = self.store.add(counts, {key_id for (_, key_id, *_) in counts}, now)
        except Exception:  # noqa: BLE001 - keep the counts and try again next time
            self.flush_failures += 1
            metrics.usage_flushed(False, now)
            logger.warning("usage flush failed; will retry", exc_info=True)
            with self._lock:
                self._counts.update(counts)
            return
        metrics.usage_flushed(True, now)
        if due:
            self._touch_last_used(due, now)

    @staticmethod
    def _touch_last_used(key_ids: list[str], now: float) -> None:
        from keys.models import ApiKey

        try:
            ApiKey.objects.filter(key_id__in=key_ids).update_quietly(
                last_used_at=datetime.fromtimestamp(now, UTC)
            )
        except Exception as exc:  # noqa: BLE001 - a missed last-used time is not worth an error
            if isinstance(exc, DatabaseError):
                metrics.database_errors.inc()
            logger.warning("could not update last_used_at", exc_info=True)
        finally:
            if threading.current_thread() is not threading.main_thread():
                close_old_connections()

    def discard_pending(self) -> None:
        """Forget what has not been flushed yet (tests start from zero)."""
        with self._lock:
            self._counts.clear()
            self._details.clear()

    def pending(self) -> dict[Bucket, int]:
        with self._lock:
            return dict(self._counts)


def _make_counter() -> UsageCounter:
    if settings.REDIS_URL:
        return UsageCounter(RedisUsageStore())
    return UsageCounter(local_store)  # the store the in-process roll-up reads


# Flushed to Redis when REDIS_URL is set, kept for the in-process roll-up otherwise.
usage = lazy(_make_counter, lambda: settings.REDIS_URL)
