"""Key-sharing signals: per key and UTC day, how many distinct client addresses, origins and user agents
used it (approximate), the top values by requests, and the rule that flags a key as probably shared.

The proxy (proxy/sharing.py) notes each relayed request in memory and flushes once a second, in one
pipelined round trip, into Redis: per key, day and kind a HyperLogLog `sharing:hll:{day}:{key}:{kind}`
(PFADD; about 12 KiB at most, error about 0.8 %) and a sorted set `sharing:top:{day}:{key}:{kind}` of
requests per value, trimmed to SHARING_TOP_KEPT members after each flush (so the top is approximate too:
a value must be frequent to stay), plus `sharing:keys:{day}`, the keys seen that day. All expire after
SHARING_RETENTION_SECONDS. Without Redis the same sketches are exact sets in `local_sketches`.
`sharing_roll_up` (run with the usage roll-up) copies today's and yesterday's figures into KeySharingDay.

The flag (`sharing_flags`): a day's distinct addresses or origins are over the key's baseline, the
median of the KEYS_SHARING_BASELINE_DAYS days before it that have a row (0 without any), when they
exceed both baseline x KEYS_SHARING_JUMP_FACTOR and baseline + KEYS_SHARING_JUMP_MIN. And a key whose
origin check is in report mode is flagged when it was called from an origin outside its allowlist.
"""

import statistics
import threading
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Sum

from keys.models import ApiKey, KeySharingDay, UsageRecord
from keys.usage.store import WOULD_REJECT

KINDS = ("addresses", "origins", "user_agents")
SHARING_TOP_KEPT = 100  # members of a day's top set kept in Redis
SHARING_TOP_SHOWN = 10  # top values a day keeps in the database
SHARING_VALUE_MAX_CHARS = 200
SHARING_RETENTION_SECONDS = 3 * 86400


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y%m%d")


def hll_key(day: str, key_id: str, kind: str) -> str:
    return f"sharing:hll:{day}:{key_id}:{kind}"


def top_key(day: str, key_id: str, kind: str) -> str:
    return f"sharing:top:{day}:{key_id}:{kind}"


def keys_key(day: str) -> str:
    return f"sharing:keys:{day}"


# (day, key_id, kind) -> Counter(value -> requests)
Sketch = dict[tuple[str, str, str], Counter[str]]


class LocalSketches:
    """The sketches of this process when there is no Redis: exact distinct sets and counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)

    def add(self, sketch: Sketch) -> None:
        with self.lock:
            for name, values in sketch.items():
                self.counts[name].update(values)

    def read(self, day: str) -> dict[str, dict[str, tuple[int, list[tuple[str, int]]]]]:
        """{key_id: {kind: (distinct, top values)}} of one day."""
        found: dict[str, dict[str, tuple[int, list[tuple[str, int]]]]] = defaultdict(dict)
        with self.lock:
            for (sketch_day, key_id, kind), values in self.counts.items():
                if sketch_day == day:
                    found[key_id][kind] = (len(values), values.most_common(SHARING_TOP_SHOWN))
        return found

    def forget_before(self, day: str) -> None:
        with self.lock:
            for name in [name for name in self.counts if name[0] < day]:
                del self.counts[name]


local_sketches = LocalSketches()


def redis_read(client: Any, day: str) -> dict[str, dict[str, tuple[int, list[tuple[str, int]]]]]:
    key_ids = sorted(member.decode() for member in client.smembers(keys_key(day)))
    pipe = client.pipeline(transaction=False)
    for key_id in key_ids:
        for kind in KINDS:
            pipe.pfcount(hll_key(day, key_id, kind))
            pipe.zrevrange(top_key(day, key_id, kind), 0, SHARING_TOP_SHOWN - 1, withscores=True)
    results = iter(pipe.execute())
    found: dict[str, dict[str, tuple[int, list[tuple[str, int]]]]] = {}
    for key_id in key_ids:
        found[key_id] = {}
        for kind in KINDS:
            distinct, top = next(results), next(results)
            found[key_id][kind] = (int(distinct), [(value.decode(), int(score)) for value, score in top])
    return found


def sharing_roll_up(*, now: float | None = None) -> int:
    """Copy today's and yesterday's sketches into KeySharingDay rows; returns the rows written."""
    import time

    now = time.time() if now is None else now
    written = 0
    for timestamp in (now - 86400, now):
        day = day_of(timestamp)
        if settings.REDIS_URL:
            from django_redis import get_redis_connection

            found = redis_read(get_redis_connection("default"), day)
        else:
            found = local_sketches.read(day)
        keys = {
            row["key_id"]: row
            for row in ApiKey.objects.filter(key_id__in=list(found)).values("pk", "key_id", "tenant_id")
        }
        for key_id, kinds in found.items():
            key = keys.get(key_id)
            if key is None:
                continue
            values = {kind: kinds.get(kind, (0, [])) for kind in KINDS}
            KeySharingDay.objects.update_or_create(
                api_key_id=key["pk"],
                day=datetime.strptime(day, "%Y%m%d").date(),
                defaults={
                    "tenant_id": key["tenant_id"],
                    **{kind: distinct for kind, (distinct, _) in values.items()},
                    "top": {kind: [list(item) for item in top] for kind, (_, top) in values.items()},
                },
            )
            written += 1
    if not settings.REDIS_URL:
        local_sketches.forget_before(day_of(now - 86400))
    return written


def _jumped(value: int, history: list[int]) -> tuple[bool, float]:
    baseline = statistics.median(history) if history else 0.0
    factor, minimum = settings.KEYS_SHARING_JUMP_FACTOR, settings.KEYS_SHARING_JUMP_MIN
    return value > baseline * factor and value > baseline + minimum, baseline


def sharing_days(*, api_key: ApiKey, days: int = 30, today: date | None = None) -> list[dict]:
    """The key's last `days` days, oldest first: {"day", "addresses", "origins", "user_agents", "top",
    "baseline_addresses", "baseline_origins", "flagged": [...reasons]}; a day without a row has zeros."""
    today = today or datetime.now(UTC).date()
    window = settings.KEYS_SHARING_BASELINE_DAYS
    first = today - timedelta(days=days - 1)
    rows = {
        row.day: row
        for row in KeySharingDay.objects.filter(api_key=api_key, day__gte=first - timedelta(days=window))
    }
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = rows.get(day)
        entry: dict[str, Any] = {
            "day": day,
            **{kind: getattr(row, kind) if row else 0 for kind in KINDS},
            "top": row.top if row else {},
            "flagged": [],
        }
        for kind in ("addresses", "origins"):
            history = [
                getattr(rows[past], kind)
                for past in (day - timedelta(days=back) for back in range(1, window + 1))
                if past in rows
            ]
            jumped, baseline = _jumped(entry[kind], history)
            entry[f"baseline_{kind}"] = baseline
            if jumped:
                entry["flagged"].append(f"{kind}_jump")
        out.append(entry)
    return out


def sharing_flags(*, api_key: ApiKey, days: int = 30, today: date | None = None) -> list[str]:
    """Why the key looks shared over the last `days` days: "addresses_jump", "origins_jump" (a day
    above its baseline), "origin_outside_allowlist" (called from an unlisted origin in report mode)."""
    flags = {
        reason for day in sharing_days(api_key=api_key, days=days, today=today) for reason in day["flagged"]
    }
    if "allowed_origins" in (api_key.report_only or []):
        since = datetime.now(UTC) - timedelta(days=days)
        outside = (
            UsageRecord.objects.filter(
                api_key=api_key, outcome=WOULD_REJECT, code="origin_not_allowed", hour__gte=since
            ).aggregate(total=Sum("count"))["total"]
            or 0
        )
        if outside:
            flags.add("origin_outside_allowlist")
    return sorted(flags)
