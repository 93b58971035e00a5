"""The proxy's Prometheus metrics, and the few calls the hot path makes to move them.

Labels are bounded on purpose: an upstream's slug only once the upstream was found (a slug a client made
up is counted under UNKNOWN_UPSTREAM), the answer's HTTP status, never a key id. Under bin/serve the
values live in files shared by the server's workers (prometheus-client's multiprocess mode,
PROMETHEUS_MULTIPROC_DIR), so one scrape of /metrics (ops/metrics.py) sees the whole server; elsewhere
(tests, runserver) in this process's default registry. Gauges say how workers' values combine
(`multiprocess_mode`): live* modes only count workers still running (ops/metrics.py sweeps dead ones).
"""

import collections
import functools
import os
import threading
import time
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from keys.usage.store import ALLOWED

UNKNOWN_UPSTREAM = "(unknown)"
ERROR = (
    "error"  # the outcome of a call that raised (the usage outcomes are allowed, rejected, upstream_error)
)
# Seconds; past the longest upstream timeout a tenant can set, so a slow call still lands in a bucket.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

requests_total = Counter(
    "proxy_requests",
    "Proxied calls answered, by upstream, outcome and HTTP status.",
    ["upstream", "outcome", "code"],
)
request_duration = Histogram(
    "proxy_request_duration_seconds",
    "The whole proxied call until its answer starts (a streamed body not included).",
    ["upstream"],
    buckets=BUCKETS,
)
upstream_duration = Histogram(
    "proxy_upstream_duration_seconds",
    "From sending to the upstream to its headers.",
    ["upstream"],
    buckets=BUCKETS,
)
in_flight = Gauge(
    "proxy_requests_in_flight", "Proxied calls being answered now.", multiprocess_mode="livesum"
)
ratelimit_fail_open = Counter(
    "proxy_ratelimit_fail_open", "Calls let through because the limits' store failed."
)
redis_errors = Counter("proxy_redis_errors", "Failed Redis operations, by operation.", ["operation"])
usage_flush_failures = Counter(
    "proxy_usage_flush_failures", "Usage flushes that failed (the counts are kept)."
)
usage_flush_lag = Gauge(
    "proxy_usage_flush_lag_seconds",
    "Seconds since the last successful usage flush, at the last attempt (the worst worker).",
    multiprocess_mode="livemax",
)
usage_pending = Gauge(
    "proxy_usage_pending_requests",
    "Requests counted but not yet durable in the database (all workers).",
    multiprocess_mode="livesum",
)
usage_last_flush = Gauge(
    "proxy_usage_last_flush_timestamp_seconds",
    "When a usage flush last succeeded (Unix time; the latest worker).",
    multiprocess_mode="livemax",
)
policy_cache = Counter(
    "proxy_policy_cache", "Policy cache lookups, by kind and hit or miss.", ["kind", "result"]
)
policy_cache_entries = Gauge(
    "proxy_policy_cache_entries",
    "Entries in the policy caches, by kind.",
    ["kind"],
    multiprocess_mode="livesum",
)
database_errors = Counter("proxy_database_errors", "Database errors met by the proxy.")

_last_flush = time.time()  # a worker that never flushed yet is as late as its age

# The labelled series the hot path moves, looked up once each (labels() checks its arguments on every
# call). Bounded like the labels themselves: upstreams x outcomes x statuses.
_CHILDREN = 4096


@functools.lru_cache(maxsize=_CHILDREN)
def _requests(upstream: str, outcome: str, code: str) -> Any:
    return requests_total.labels(upstream, outcome, code)


@functools.lru_cache(maxsize=_CHILDREN)
def _request_duration(upstream: str) -> Any:
    return request_duration.labels(upstream)


@functools.lru_cache(maxsize=_CHILDREN)
def _upstream_duration(upstream: str) -> Any:
    return upstream_duration.labels(upstream)


# In multiprocess mode every move of a value is a lock and a write into a shared file (2.7 us each,
# measured here; an observation is two), and a proxied call makes nine: the hot path then only appends
# its moves to this process's batch, and a thread adds them to the files every BATCH_SECONDS, summed
# (one write per series). /metrics is that much behind at most. In this process's own registry (tests,
# runserver) a move is cheap and the values are exact at once: no batch. (prometheus-client, too,
# decides at import whether values live in files.)
BATCHED = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
BATCH_SECONDS = 1.0
# (series, amount) moved and (histogram series, value) observed since the last flush; deque.append and
# popleft are atomic, so the event loop and the flusher thread need no lock.
_moved: collections.deque[tuple[Any, float]] = collections.deque()
_observed: collections.deque[tuple[Any, float]] = collections.deque()
_flusher_started = False


def move(series: Any, amount: float = 1.0) -> None:
    """Add `amount` to a Counter's or Gauge's series (a labelled child or a metric without labels)."""
    if BATCHED:
        _moved.append((series, amount))
        _start_flusher()
    else:
        series.inc(amount)


def observe(series: Any, value: float) -> None:
    """One observation of a Histogram's series."""
    if BATCHED:
        _observed.append((series, value))
        _start_flusher()
    else:
        series.observe(value)


def _start_flusher() -> None:
    global _flusher_started
    if _flusher_started:
        return
    _flusher_started = True
    threading.Thread(target=_flush_forever, name="metrics-batch", daemon=True).start()


def _forked() -> None:
    global _flusher_started
    _flusher_started = False  # a forked worker has none of its parent's threads: it starts its own
    _moved.clear()  # (what the parent moved is the parent's to write)
    _observed.clear()


os.register_at_fork(after_in_child=_forked)


def _flush_forever() -> None:
    while True:
        time.sleep(BATCH_SECONDS)
        flush_batch()


def _drain(batch: collections.deque[tuple[Any, float]]) -> dict[Any, list[float]]:
    by_series: dict[Any, list[float]] = {}
    while True:
        try:
            series, amount = batch.popleft()
        except IndexError:
            return by_series
        by_series.setdefault(series, []).append(amount)


def flush_batch() -> None:
    """Add what the hot path moved since the last flush into the shared values, one write per series."""
    for series, amounts in _drain(_moved).items():
        if total := sum(amounts):
            series.inc(total)
    for series, values in _drain(_observed).items():
        _observe_all(series, values)


def _observe_all(histogram: Any, values: list[float]) -> None:
    """Many observations of one Histogram series in one write per bucket. prometheus-client has no call
    for it: this is its Histogram.observe (pinned 0.26.0), with the counts summed first."""
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for value in values:
        for index, bound in enumerate(bounds):
            if value <= bound:
                counts[index] += 1
                break
    histogram._sum.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)


def call_started() -> float:
    """A proxied call begins; returns what call_finished needs."""
    move(in_flight)
    return time.perf_counter()


class Answered(Protocol):
    """What a proxied call answered: a Django response or the relayed upstream answer."""

    status_code: int


def call_finished(started: float, upstream: str | None, response: Answered | None) -> None:
    """A proxied call answered (None: it raised, the server answers 500): `upstream` is None unless
    the upstream exists. A refusal (proxy.responses.Refusal) carries its outcome; the rest were allowed."""
    move(in_flight, -1.0)
    label = upstream or UNKNOWN_UPSTREAM
    outcome, status = (
        (ERROR, 500) if response is None else (getattr(response, "outcome", ALLOWED), response.status_code)
    )
    move(_requests(label, outcome, str(status) if 100 <= status < 600 else "other"))
    observe(_request_duration(label), time.perf_counter() - started)


def upstream_answered(upstream: str, sent: float) -> None:
    """The upstream's headers came (or the attempt failed) `sent` being time.perf_counter() at sending."""
    observe(_upstream_duration(upstream), time.perf_counter() - sent)


def usage_flushed(ok: bool, now: float, pending: int = 0, *, database: bool = False) -> None:
    """A usage flush ended (`pending`: requests still not durable after it; `database`: it failed on
    a database error)."""
    global _last_flush
    usage_pending.set(pending)
    if ok:
        _last_flush = now
        usage_flush_lag.set(0)
        usage_last_flush.set(now)
    else:
        usage_flush_failures.inc()
        if database:
            database_errors.inc()
        usage_flush_lag.set(now - _last_flush)


def ratelimit_failed_open(redis_failed: bool) -> None:
    ratelimit_fail_open.inc()
    if redis_failed:
        redis_errors.labels("ratelimit").inc()
