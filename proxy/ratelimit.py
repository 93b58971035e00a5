"""Rate limits and daily quotas per key that hold across processes, without a Redis round trip per request.

Each window (a rate's window, or the UTC day for a quota) has one shared counter in Redis. A process
*leases* a share of what is left in one atomic step (a Lua script: never more than the limit in total)
and spends it locally; the share grows while the key is busy and shrinks to 1 near the limit, so what
a process leased but did not spend costs little. Counting never lets more than the limit through.
Without Redis (the embedded default) the same leases come from a counter in this process.
When Redis fails the limiter fails open: the request passes, and the failure is logged and counted.

A daily quota outlives Redis: when a lease finds the day's counter new (the day began, or Redis
restarted empty, or a process of the embedded default restarted), a background thread adds to it the
day's durable total (keys.selectors.usage.usage_day_spent: the usage records, which every process
flushes each PROXY_USAGE_FLUSH_SECONDS), so the count resumes from what was spent, within about one
flush interval. No database call is ever made on the request path. Rate-limit windows are not
seeded: after a Redis restart they begin again (at most one window's worth more gets through).
"""

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from django.conf import settings

from proxy import metrics
from proxy.checks import Rejection, reject
from proxy.lazy import lazy
from proxy.policy import KeyPolicy

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

# KEYS[1] the window's counter; ARGV: limit, wanted, ttl. Grants at most an eighth of what is left
# (at least 1), so several processes share the end of a window fairly. Returns {granted, used}.
LEASE_SCRIPT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local left = limit - used
if left <= 0 then return {0, used} end
local grant = math.min(tonumber(ARGV[2]), math.max(1, math.floor(left / 8)))
used = redis.call('INCRBY', KEYS[1], grant)
if used == grant then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
return {grant, used}
"""


class Counters(Protocol):
    """Where the windows' counters live: Redis (RedisCounters) or this process (LocalCounters)."""

    def lease(self, counter: str, limit: int, wanted: int, ttl: int) -> tuple[int, int]:
        """Grant up to `wanted` units of `limit` from the counter: (granted, used in total after it)."""
        ...

    def add(self, counter: str, amount: int, ttl: int) -> None:
        """Add `amount` to the counter (creating it, to live `ttl` seconds, when missing)."""
        ...


class LocalCounters:
    """In-process counters with the lease semantics of the Redis script (one process only)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def lease(self, counter: str, limit: int, wanted: int, ttl: int) -> tuple[int, int]:
        now = time.monotonic()
        with self._lock:
            expires, used = self._counts.get(counter, (now + ttl, 0))
            if expires <= now:
                expires, used = now + ttl, 0
            left = limit - used
            grant = 0 if left <= 0 else min(wanted, max(1, left // 8))
            self._counts[counter] = (expires, used + grant)
            if len(self._counts) > 100_000:
                self._counts = {name: entry for name, entry in self._counts.items() if entry[0] > now}
            return grant, used + grant

    def add(self, counter: str, amount: int, ttl: int) -> None:
        now = time.monotonic()
        with self._lock:
            expires, used = self._counts.get(counter, (now + ttl, 0))
            if expires <= now:
                expires, used = now + ttl, 0
            self._counts[counter] = (expires, used + amount)


class RedisCounters:
    def __init__(self, client: "redis.Redis | None" = None) -> None:
        from django_redis import get_redis_connection

        self._client = client if client is not None else get_redis_connection("default")
        self._lease = self._client.register_script(LEASE_SCRIPT)

    def lease(self, counter: str, limit: int, wanted: int, ttl: int) -> tuple[int, int]:
        grant, used = self._lease(keys=[counter], args=[limit, wanted, ttl])
        return int(grant), int(used)

    def add(self, counter: str, amount: int, ttl: int) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.incrby(counter, amount)
        pipe.ttl(counter)
        _, left = pipe.execute()
        if int(left) < 0:  # created by this INCRBY (Redis lost it again): give it its window's life
            self._client.expire(counter, ttl)


@dataclass(slots=True)
class _Lease:
    window_start: int
    available: int = 0
    used_globally: int = 0  # the shared counter after this process's last lease
    spent_locally: int = 0  # spent from leases since then
    lease_size: int = 1
    leased_at: float = 0.0
    exhausted: bool = False


@dataclass(slots=True)
class Verdict:
    """The outcome of one request against its key's limits, and what to say in the headers."""

    rejection: Rejection | None = None  # the first of `refusals`
    headers: dict[str, str] = field(default_factory=dict)
    # Every limit that refused, in order (rate, then quota): the quota is still spent and checked past
    # a rate limit in report mode, so a relay sees both (proxy/report.py).
    refusals: list[Rejection] = field(default_factory=list)

    def refuse(self, rejection: Rejection) -> None:
        self.rejection = self.rejection or rejection
        self.refusals.append(rejection)


class Limiter:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self.fail_open_count = 0
        self._redis_down_until = 0.0
        # Daily-quota counters found new, to be seeded from the durable day total: counter -> (key_id,
        # day start). Filled on the request path (a dict insert), emptied by the seeder thread.
        self._to_seed: dict[str, tuple[str, int]] = {}
        self._seed_wanted = threading.Event()
        self._seeder: threading.Thread | None = None

    def _take(self, name: str, limit: int, window: int, now: float) -> tuple[bool, int, int]:
        """(allowed, remaining, seconds until the window resets) for one unit of a limit."""
        window_start = int(now // window) * window
        reset = max(1, math.ceil(window_start + window - now))
        with self._lock:
            lease = self._leases.get(name)
            if lease is None or lease.window_start != window_start:
                lease = self._leases[name] = _Lease(window_start=window_start)
            if lease.available > 0:
                lease.available -= 1
                lease.spent_locally += 1
                return True, max(0, limit - lease.used_globally + lease.available), reset
            if lease.exhausted:
                return False, 0, reset
            # Lease more: twice as much when the last lease went within 100 ms, half when it lasted long.
            wanted = lease.lease_size * 2 if now - lease.leased_at < 0.1 else max(1, lease.lease_size // 2)
            wanted = min(wanted, settings.PROXY_RATE_LEASE_MAX)
        counter = f"rl:{name}:{window_start}"
        granted, used = self.counters.lease(counter, limit, wanted, window + 5)
        if granted and used == granted and name.endswith(":q"):  # the day's counter is new
            self._seed_later(counter, name[:-2], window_start)
        with self._lock:
            lease.leased_at, lease.lease_size, lease.used_globally = now, max(1, granted), used
            if granted == 0:
                lease.exhausted = True
                return False, 0, reset
            lease.available += granted - 1
            lease.spent_locally = 1
            return True, max(0, limit - used + lease.available), reset

    def check(self, key: KeyPolicy, now: float) -> Verdict:
        """Spend one unit of the key's rate limit and then of its daily quota."""
        verdict = Verdict()
        if key.rate is None and key.daily_quota is None:
            return verdict
        if now < self._redis_down_until:
            return self._fail_open(verdict, None)
        try:
            if key.rate is not None:
                limit, window = key.rate
                allowed, remaining, reset = self._take(f"{key.key_id}:r", limit, window, now)
                verdict.headers["RateLimit-Policy"] = f'"default";q={limit};w={window}'
                verdict.headers["RateLimit"] = f'"default";r={remaining};t={reset}'
                if not allowed:
                    verdict.refuse(
                        reject(
                            "rate_limited",
                            f"{key.key_id} is over its rate limit of {limit} per {window} s.",
                            reset,
                            check="rate_limit",
                        )
                    )
                    if "rate_limit" not in key.report_only:
                        return verdict
            if key.daily_quota is not None:
                allowed, remaining, reset = self._take(f"{key.key_id}:q", key.daily_quota, 86400, now)
                if not allowed:
                    verdict.refuse(
                        reject(
                            "quota_exceeded",
                            f"{key.key_id} has used its daily quota of {key.daily_quota}.",
                            reset,
                            check="daily_quota",
                        )
                    )
        except Exception as exc:  # noqa: BLE001 - any failure of the shared counters fails open
            return self._fail_open(verdict, exc)
        return verdict

    def _seed_later(self, counter: str, key_id: str, day_start: int) -> None:
        with self._lock:
            self._to_seed[counter] = (key_id, day_start)
            start = self._seeder is None and settings.PROXY_USAGE_FLUSH_SECONDS > 0
            if start:
                self._seeder = threading.Thread(target=self._seed_forever, name="quota-seeder", daemon=True)
        if start and self._seeder is not None:
            self._seeder.start()
        self._seed_wanted.set()

    def _seed_forever(self) -> None:
        while True:
            self._seed_wanted.wait(timeout=max(1.0, settings.PROXY_USAGE_FLUSH_SECONDS))
            self._seed_wanted.clear()
            try:
                self.seed_pending()
            finally:
                from django.db import close_old_connections

                close_old_connections()

    def seed_pending(self) -> int:
        """Add each new daily-quota counter's durable day total to it (off the request path: the seeder
        thread calls this; tests may too). A counter whose seeding failed is tried again next time.
        Returns the counters seeded."""
        from datetime import UTC, datetime

        from django.db import DatabaseError

        from keys.selectors.usage import usage_day_spent

        with self._lock:
            pending, self._to_seed = self._to_seed, {}
        seeded = 0
        for counter, (key_id, day_start) in pending.items():
            try:
                spent = usage_day_spent(key_id=key_id, day_start=datetime.fromtimestamp(day_start, UTC))
                if spent:
                    self.counters.add(counter, spent, day_start + 86400 + 5 - int(time.time()))
                    logger.info("daily quota of %s resumed at %d spent today", key_id, spent)
                seeded += 1
            except Exception as exc:  # noqa: BLE001 - try again at the next round
                if isinstance(exc, DatabaseError):
                    metrics.database_errors.inc()
                logger.warning("could not seed the daily quota counter of %s", key_id, exc_info=True)
                with self._lock:
                    self._to_seed.setdefault(counter, (key_id, day_start))
        return seeded

    def _fail_open(self, verdict: Verdict, exc: Exception | None) -> Verdict:
        self.fail_open_count += 1
        metrics.ratelimit_failed_open(redis_failed=exc is not None)
        if exc is not None:
            # Don't wait on a dead Redis for every request: skip it for a second, then try again.
            self._redis_down_until = time.time() + 1.0
            logger.warning("rate limiter failing open: shared counters unavailable (%s)", type(exc).__name__)
        return verdict


def _make_limiter() -> Limiter:
    return Limiter(RedisCounters() if settings.REDIS_URL else LocalCounters())


# Shared counters in Redis when REDIS_URL is set, this process's own otherwise.
limiter = lazy(_make_limiter, settings=("REDIS_URL",))
