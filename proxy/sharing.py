"""Key-sharing sketches off the hot path (keys/sharing.py has the store's format and the roll-up).

A relayed request only increments one counter in process memory (`note`). A background thread
flushes them every PROXY_USAGE_FLUSH_SECONDS in one pipelined round trip: PFADD into each key's daily
HyperLogLogs, ZINCRBY into its top values (then trimmed), SADD of the key into the day's set. A process
keeps at most SHARING_CALLS_PER_FLUSH distinct combinations between flushes (past it they are not
counted until the next flush). Values are request text an attacker chooses: cut to
SHARING_VALUE_MAX_CHARS. Without Redis: keys.sharing.local_sketches.
A failed flush keeps its counts for the next one.
"""

import atexit
import logging
import multiprocessing.util
import threading
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from django.conf import settings

from keys import sharing as store
from proxy.lazy import lazy

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

# Distinct (key, address, origin, user agent) combinations a process keeps between two flushes; past it
# new ones are not counted until the next flush (a flood of made-up user agents costs bounded memory).
SHARING_CALLS_PER_FLUSH = 20_000


class SharingCounter:
    def __init__(self, redis_client: "redis.Redis | None") -> None:
        self._client = redis_client
        self._lock = threading.Lock()
        # (day number, key_id, address, origin, user agent) -> requests, since the last flush.
        self._calls: Counter[tuple[int, str, str, str, str]] = Counter()
        self._thread: threading.Thread | None = None
        self.flush_failures = 0

    def note(self, key_id: str, address: str, origin: str | None, user_agent: str) -> None:
        """One relayed request of the key: one dictionary increment (split into kinds when flushed)."""
        cut = store.SHARING_VALUE_MAX_CHARS
        if len(user_agent) > cut:
            user_agent = user_agent[:cut]
        if origin is not None and len(origin) > cut:
            origin = origin[:cut]
        # The UTC day's number; named (YYYYMMDD) only when flushed.
        call = (int(time.time() // 86400), key_id, address, origin or "", user_agent)
        calls = self._calls
        with self._lock:
            if call in calls or len(calls) < SHARING_CALLS_PER_FLUSH:
                calls[call] += 1
        if self._thread is None and settings.PROXY_USAGE_FLUSH_SECONDS > 0:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="sharing-flusher", daemon=True)
            self._thread.start()
        # As proxy/usage.py: atexit for a plain process, a finaliser for a server's worker process.
        atexit.register(self.flush)
        multiprocessing.util.Finalize(self, self.flush, exitpriority=10)

    def _run(self) -> None:
        while True:
            time.sleep(settings.PROXY_USAGE_FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._calls = self._calls, Counter()
        if not pending:
            return
        sketch: store.Sketch = defaultdict(Counter)
        for (day_number, key_id, address, origin, user_agent), count in pending.items():
            day = store.day_of(day_number * 86400)
            for kind, value in (("addresses", address), ("origins", origin), ("user_agents", user_agent)):
                if value:
                    sketch[(day, key_id, kind)][value] += count
        try:
            if self._client is None:
                store.local_sketches.add(sketch)
            else:
                self._flush_redis(self._client, sketch)
        except Exception:  # noqa: BLE001 - keep the counts and try again next time
            self.flush_failures += 1
            logger.warning("sharing flush failed; will retry", exc_info=True)
            with self._lock:
                self._calls.update(pending)

    @staticmethod
    def _flush_redis(client: "redis.Redis", sketch: store.Sketch) -> None:
        ttl = store.SHARING_RETENTION_SECONDS
        pipe = client.pipeline(transaction=False)
        for (day, key_id, kind), values in sketch.items():
            hll, top = store.hll_key(day, key_id, kind), store.top_key(day, key_id, kind)
            pipe.pfadd(hll, *values)
            pipe.expire(hll, ttl)
            for value, count in values.items():
                pipe.zincrby(top, count, value)
            pipe.zremrangebyrank(top, 0, -store.SHARING_TOP_KEPT - 1)
            pipe.expire(top, ttl)
            pipe.sadd(store.keys_key(day), key_id)
            pipe.expire(store.keys_key(day), ttl)
        pipe.execute()

    def discard_pending(self) -> None:
        with self._lock:
            self._calls.clear()

    def pending(self) -> dict[tuple[int, str, str, str, str], int]:
        with self._lock:
            return dict(self._calls)


def _make_counter() -> SharingCounter:
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        return SharingCounter(get_redis_connection("default"))
    return SharingCounter(None)


sharing = lazy(_make_counter, settings=("REDIS_URL",))
