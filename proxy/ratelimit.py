"""Rate limits and daily quotas per key that hold across processes, without a Redis round trip per request.

Each window (a rate's window, or the UTC day for a quota) has one shared counter in Redis. A process
*leases* a share of what is left in one atomic step (a Lua script: never more than the limit in total)
and spends it locally; the share grows while the key is busy and shrinks to 1 near the limit, so what
a process leased but did not spend costs little. Counting never lets more than the limit through.
Without Redis (the embedded default) the same leases come from a counter in this process.
When Redis fails the limiter fails open: the request passes, and the failure is logged and counted.
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


class RedisCounters:
    def __init__(self, client: "redis.Redis | None" = None) -> None:
        from django_redis import get_redis_connection

        self._client = client if client is not None else get_redis_connection("default")
        self._lease = self._client.register_script(LEASE_SCRIPT)

    def lease(self, counter: str, limit: int, wanted: int, ttl: int) -> tuple[int, int]:
        grant, used = self._lease(keys=[counter], args=[limit, wanted, ttl])
        return int(grant), int(used)


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
        granted, used = self.counters.lease(f"rl:{name}:{window_start}", limit, wanted, window + 5)
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
limiter = lazy(_make_limiter, lambda: settings.REDIS_URL)
