"""The usage counters' store: the contract between the proxy, which writes them, and the roll-up job.

The proxy counts requests in memory and flushes them every second into one hash per minute,
`usage:{minute_epoch}`, whose fields are `key_id|outcome|code|detail` and whose values are counts;
the hashes expire after USAGE_RETENTION_SECONDS. Without Redis they go into `local_store`, this
process's LocalUsageStore. The roll-up (keys/jobs.py) takes complete minutes out of either store as
*claims*: snapshots that nobody writes to any more, each with a unique name.

`detail` says what a rejection refused (the origin, client address, user agent, method...), text an
attacker chooses: cleaned by `usage_detail` (at most DETAIL_MAX_CHARS, no control characters), and
each process counts at most DETAILS_PER_KEY_MINUTE distinct ones per key and minute, the rest under
OTHER_DETAIL. Fields split on their first three `|` only, so a detail may itself hold `|`. A field
without a detail is written `key_id|outcome|code`, the format from before details: the fields an
older process flushed during a deploy still roll up, and an older roll-up still reads every field
but those with a detail (it skips these as malformed: deploy the roll-up workers first).

In Redis a minute is claimed by RENAME-ing its hash to `usage:claimed:{minute}:{claimed_at}:{nonce}`:
the rename is atomic, so of two roll-ups only one gets a given hash, and counts the proxy flushes
afterwards for that minute start a fresh hash that a later roll-up claims. A claim left behind by a
roll-up that died is offered again once it is `stale_after` seconds old.
"""

import re
import threading
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Protocol, cast

from redis import Redis
from redis.exceptions import ResponseError

ALLOWED, REJECTED, UPSTREAM_ERROR = "allowed", "rejected", "upstream_error"
# A refusal of a check in report mode: the request passed and is counted under its own outcome too.
WOULD_REJECT = "would_reject"
USAGE_KEY = "usage:{minute}"  # a Redis hash per minute: "key_id|outcome|code[|detail]" -> count
CLAIMED_PREFIX = "usage:claimed:"
USAGE_RETENTION_SECONDS = 3 * 86400
LAST_USED_INTERVAL = 60
DETAIL_MAX_CHARS = 200  # UsageRecord.detail's max_length
DETAILS_PER_KEY_MINUTE = 20  # distinct (code, detail) pairs a process counts per key and minute
OTHER_DETAIL = "(other)"  # the detail of rejections past that bound

_MINUTE_KEY = re.compile(r"^usage:(\d+)$")
_CLAIMED_KEY = re.compile(r"^usage:claimed:(\d+):(\d+):[0-9a-f]+$")


def usage_key(minute: int) -> str:
    """The Redis hash of one minute (its start, in epoch seconds)."""
    return USAGE_KEY.format(minute=minute)


def usage_field(key_id: str, outcome: str, code: str = "", detail: str = "") -> str:
    """The hash field of a counter: `key_id|outcome|code`, with `|detail` only when there is one."""
    return f"{key_id}|{outcome}|{code}|{detail}" if detail else f"{key_id}|{outcome}|{code}"


def usage_field_parts(name: str) -> tuple[str, str, str, str] | None:
    """(key_id, outcome, code, detail) of a field, in either format, or None for a field that is not one."""
    parts = name.split("|", 3)  # key ids, outcomes and codes hold no `|`; a detail may
    if len(parts) == 3:
        parts.append("")
    if len(parts) != 4 or not parts[0] or not parts[1]:
        return None
    return (parts[0], parts[1], parts[2], parts[3])


def usage_detail(text: str) -> str:
    """What a rejection refused, safe to store and show: at most DETAIL_MAX_CHARS, and every control,
    format (bidi, zero-width), surrogate or other unprintable character replaced by U+FFFD."""
    if len(text) > DETAIL_MAX_CHARS:
        text = text[: DETAIL_MAX_CHARS - 1] + "\u2026"
    if not text.isprintable():
        text = "".join(char if char.isprintable() else "\ufffd" for char in text)
    return text


def minute_of(timestamp: float) -> int:
    return int(timestamp // 60) * 60


@dataclass(frozen=True)
class Claim:
    """One minute's counters, taken out of the store by one roll-up; `name` is unique for ever."""

    name: str
    minute: int
    counts: dict[str, int] = field(default_factory=dict)


class LocalUsageStore:
    """Flushed counters of this process, by minute, for the roll-up when there is no Redis."""

    def __init__(self) -> None:
        self.minutes: dict[int, Counter] = defaultdict(Counter)
        self._last_used: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(
        self, counts: dict[tuple[int, str, str, str, str], int], used_key_ids: set[str], now: float
    ) -> list[str]:
        """Add counts keyed (minute, key_id, outcome, code, detail); returns the keys whose
        last_used_at is due (as proxy.usage.RedisUsageStore.add)."""
        with self.lock:
            for (minute, key_id, outcome, code, detail), count in counts.items():
                self.minutes[minute][usage_field(key_id, outcome, code, detail)] += count
        due = [
            key_id for key_id in used_key_ids if now - self._last_used.get(key_id, 0) >= LAST_USED_INTERVAL
        ]
        self._last_used.update(dict.fromkeys(due, now))
        return due

    def claim(self, *, now: float, stale_after: float) -> list[Claim]:
        """Take out every minute before the current one (under the lock: each count goes to one claim)."""
        current = minute_of(now)
        with self.lock:
            done = sorted(minute for minute in self.minutes if minute < current)
            taken = [(minute, self.minutes.pop(minute)) for minute in done]
        return [
            Claim(name=f"local:{minute}:{uuid.uuid4().hex}", minute=minute, counts=dict(counts))
            for minute, counts in taken
            if counts
        ]

    def release(self, claim: Claim) -> None:
        """The claim is in the database: nothing is left to drop (it left the store when claimed)."""

    def give_back(self, claim: Claim) -> None:
        """The claim could not be applied: put its counts back for the next roll-up."""
        with self.lock:
            self.minutes[claim.minute].update(claim.counts)


class RedisUsageSource:
    """The roll-up's side of the Redis store (the proxy's writer is proxy.usage.RedisUsageStore)."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    def claim(self, *, now: float, stale_after: float) -> list[Claim]:
        """Claim every complete minute's hash (RENAME), plus claims left stale by a roll-up that died."""
        current = minute_of(now)
        claims: list[Claim] = []
        for raw in self.client.scan_iter(match="usage:*", count=1000):
            name = raw.decode() if isinstance(raw, bytes) else raw
            minute_match = _MINUTE_KEY.match(name)
            if minute_match and int(minute_match.group(1)) < current:
                minute = int(minute_match.group(1))
                claimed = f"{CLAIMED_PREFIX}{minute}:{int(now)}:{uuid.uuid4().hex}"
                try:
                    self.client.rename(name, claimed)
                except ResponseError as exc:
                    if "no such key" in str(exc).lower():
                        continue  # another roll-up claimed it first
                    raise
                # A hash renamed between the proxy's HINCRBY and EXPIRE would otherwise live for ever.
                self.client.expire(claimed, USAGE_RETENTION_SECONDS)
                claims.append(Claim(name=claimed, minute=minute))
                continue
            stale_match = _CLAIMED_KEY.match(name)
            if stale_match and now - int(stale_match.group(2)) >= stale_after:
                claims.append(Claim(name=name, minute=int(stale_match.group(1))))
        return [self._read(claim) for claim in claims]

    def _read(self, claim: Claim) -> Claim:
        # redis-py annotates its sync and asyncio clients alike (a result or an awaitable): this one is sync.
        raw = cast(dict[bytes | str, bytes], self.client.hgetall(claim.name))
        counts = {(key.decode() if isinstance(key, bytes) else key): int(value) for key, value in raw.items()}
        return Claim(name=claim.name, minute=claim.minute, counts=counts)

    def release(self, claim: Claim) -> None:
        self.client.delete(claim.name)

    def give_back(self, claim: Claim) -> None:
        """Leave the claim where it is: once stale, the next roll-up applies it (or finds it applied)."""


local_store = LocalUsageStore()  # this process's counters when there is no Redis


class UsageSource(Protocol):
    """What the roll-up reads counters from: LocalUsageStore or RedisUsageSource."""

    def claim(self, *, now: float, stale_after: float) -> list[Claim]: ...

    def release(self, claim: Claim) -> None: ...

    def give_back(self, claim: Claim) -> None: ...


def usage_source() -> "LocalUsageStore | RedisUsageSource":
    """Where the roll-up reads: Redis when REDIS_URL is set, else this process's local store."""
    from django.conf import settings

    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        return RedisUsageSource(get_redis_connection("default"))
    return local_store
