"""Usage counting off the hot path: per key, per minute, by outcome, rejection code and detail.

A request only increments a counter in process memory. A background thread flushes the counters
every PROXY_USAGE_FLUSH_SECONDS straight into the database (batched upserts of hourly UsageRecord
rows, keys/usage/roll_up.py `usage_batch_apply`), and once more when the process stops (atexit, and a
multiprocessing finaliser for a server's worker). What a flush takes out is a *batch* with a unique
name, kept in memory until its transaction commits: a failed flush (database down) keeps it and
retries it under the same name, so a batch is applied exactly once whatever the failure. Neither
Redis nor Celery is on that path: a Redis restart or a Celery outage loses no usage; a SIGKILL loses
what the process counted since its last flush (at most PROXY_USAGE_FLUSH_SECONDS).
Each key's `last_used_at` is written at most once a minute per process, by the flusher, never by the
request. RedisUsageStore (the per-minute hashes of keys/usage/store.py) stays for the roll-up of
hashes an older version left in Redis, and for tests of that format.
A rejection's detail (what it refused: an origin, a user agent...) is request text an attacker
chooses, so it is cleaned and cut to length, and each key counts at most DETAILS_PER_KEY_MINUTE
distinct ones a minute in a process; the rest are counted under OTHER_DETAIL.
"""

import atexit
import logging
import multiprocessing.util
import threading
import time
import uuid
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
    "DatabaseUsageStore",
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


class DatabaseUsageStore:
    """Flushes into UsageRecord rows directly: durable once `add` returns."""

    def __init__(self) -> None:
        self._last_used: dict[str, float] = {}

    def add(
        self, counts: dict[Bucket, int], used_key_ids: set[str], now: float, *, name: str = ""
    ) -> list[str]:
        from keys.usage.roll_up import usage_batch_apply

        usage_batch_apply(name=name or f"flush:{uuid.uuid4().hex}", counts=counts)
        due = [key for key in used_key_ids if now - self._last_used.get(key, 0) >= LAST_USED_INTERVAL]
        self._last_used.update(dict.fromkeys(due, now))
        if len(self._last_used) > 100_000:
            self._last_used = {k: at for k, at in self._last_used.items() if now - at < LAST_USED_INTERVAL}
        return due


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
        # Batches taken out of _counts but not yet durable, oldest first, each under its unique name.
        self._unsent: list[tuple[str, dict[Bucket, int]]] = []
        self._flushing = threading.Lock()  # one flush at a time (the thread, atexit, a signal)
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
        """Make the counted usage durable (every unsent batch, oldest first) and touch last_used_at of
        the keys used. A batch that fails stays for the next flush, under the same name."""
        with self._flushing:
            with self._lock:
                counts, self._counts = self._counts, Counter[Bucket]()
            if counts:
                self._unsent.append((f"flush:{uuid.uuid4().hex}", dict(counts)))
            now = time.time()
            due: set[str] = set()
            try:
                while self._unsent:
                    name, batch = self._unsent[0]
                    used = {key_id for (_, key_id, *_) in batch}
                    if isinstance(self.store, DatabaseUsageStore):
                        due.update(self.store.add(batch, used, now, name=name))
                    else:
                        due.update(self.store.add(batch, used, now))
                    self._unsent.pop(0)
            except Exception as exc:  # noqa: BLE001 - keep the batches and try again next time
                self.flush_failures += 1
                metrics.usage_flushed(
                    False, now, self._pending_requests(), database=isinstance(exc, DatabaseError)
                )
                logger.warning(
                    "usage flush failed; %d batches kept for the next one", len(self._unsent), exc_info=True
                )
                return
            finally:
                if threading.current_thread() is not threading.main_thread():
                    close_old_connections()
            metrics.usage_flushed(True, now, self._pending_requests())
        if due:
            self._touch_last_used(sorted(due), now)

    def _pending_requests(self) -> int:
        with self._lock:
            return sum(self._counts.values()) + sum(sum(batch.values()) for _, batch in self._unsent)

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
            self._unsent.clear()
            self._details.clear()

    def pending(self) -> dict[Bucket, int]:
        with self._lock:
            return dict(self._counts)


def _make_counter() -> UsageCounter:
    return UsageCounter(DatabaseUsageStore())


# Flushed into the database, with or without Redis.
usage = lazy(_make_counter)
