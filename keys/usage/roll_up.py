"""The usage roll-up: the proxy's per-minute counters (keys/usage/store.py) added into hourly
UsageRecord rows, exactly once, by outcome, rejection code and detail (what the rejection refused).

Exactly once rests on two steps: a minute's hash is claimed by an atomic RENAME to a uniquely named
key, and the claim is added to the database in one transaction together with a marker row under that
unique name; only then is the claim deleted. A roll-up that dies before the commit leaves the claim to
the next one (after USAGE_CLAIM_STALE_SECONDS); one that dies after it leaves a marker, so the claim is
never counted twice.

`usage_batch_apply` is the same step for the proxy's own flushes: each serving process writes its
counted deltas straight into UsageRecord every flush interval (proxy/usage.py), under a batch name it
keeps until the batch is durable, so a retry after an unclear failure (a commit whose answer was lost)
is applied at most once; Redis and Celery are not on that path, and a Redis restart loses no usage.
"""

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from keys.models import ApiKey, UsageRecord, UsageRollup
from keys.usage import store as usage_store

logger = logging.getLogger(__name__)

# A roll-up still holding a claim after this long is taken to have died; another one finishes it.
USAGE_CLAIM_STALE_SECONDS = 300
# Distinct rejection details a key keeps per hour (whatever the processes and minutes they came from);
# the rest add up under OTHER_DETAIL, so random origins or user agents cannot grow the table unbounded.
USAGE_DETAILS_PER_KEY_HOUR = 100


def usage_roll_up(
    *,
    source: usage_store.UsageSource | None = None,
    now: float | None = None,
    stale_after: float | None = None,
) -> int:
    """Add the usage counters of every complete minute into hourly UsageRecord rows; returns the
    number of requests added.

    Exactly once: each minute's counters are first *claimed* out of the store (in Redis an atomic
    RENAME of the minute's hash to a uniquely named key, so no two roll-ups get the same counters and
    later counts start a new hash); each claim is then added to UsageRecord in one database
    transaction that also inserts a UsageRollup row under the claim's unique name, and only after
    that commits is the claim deleted from the store. A roll-up that dies before the commit leaves
    the claim for the next one (after `stale_after` seconds); one that dies after it leaves a claim
    whose marker exists, so the next roll-up only deletes it; two roll-ups meeting the same claim race
    on the marker's unique constraint, and the loser adds nothing. Counters of unknown keys (deleted
    since) are skipped. Rejection details are cleaned again (usage_store.usage_detail) and bounded to
    USAGE_DETAILS_PER_KEY_HOUR distinct ones per key and hour.
    """
    source = source if source is not None else usage_store.usage_source()
    now = time.time() if now is None else now
    stale_after = USAGE_CLAIM_STALE_SECONDS if stale_after is None else stale_after
    added = 0
    for claim in source.claim(now=now, stale_after=stale_after):
        try:
            added += _usage_claim_apply(claim=claim)
        except Exception:
            source.give_back(claim)
            raise
        source.release(claim)
    return added


def _usage_claim_apply(*, claim: usage_store.Claim) -> int:
    if not claim.counts:
        return 0
    minute = datetime.fromtimestamp(claim.minute, UTC)
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():  # a savepoint: a lost race on the marker keeps the transaction
                    UsageRollup.objects.create(claim=claim.name, minute=minute)
            except IntegrityError:
                return 0  # another roll-up applied this claim
            return _usage_records_add(counts=claim.counts, hour=minute.replace(minute=0))
    except IntegrityError:
        # Deferred constraints fail at commit (a key deleted meanwhile): nothing was applied.
        if UsageRollup.objects.filter(claim=claim.name).exists():
            return 0
        raise


Bucket = tuple[str, str, str, str]  # key_id, outcome, code, detail


def usage_batch_apply(*, name: str, counts: dict[tuple[int, str, str, str, str], int]) -> int:
    """Add one flush's counts, keyed (minute, key_id, outcome, code, detail), into hourly UsageRecord
    rows in one transaction with a UsageRollup marker named `name`; returns the requests added (0 when
    a batch of that name was applied before: retrying a batch is safe). Raises on database errors,
    having applied nothing: the caller keeps the batch and retries it under the same name."""
    by_hour: dict[int, dict[str, int]] = defaultdict(dict)
    for (minute, key_id, outcome, code, detail), count in counts.items():
        fields = by_hour[minute - minute % 3600]
        field = usage_store.usage_field(key_id, outcome, code, detail)
        fields[field] = fields.get(field, 0) + count
    if not by_hour:
        return 0
    first = datetime.fromtimestamp(min(by_hour), UTC)
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():  # a savepoint: a retry of an applied batch keeps the transaction
                    UsageRollup.objects.create(claim=name, minute=first)
            except IntegrityError:
                return 0  # applied before (its commit's answer was lost)
            return sum(
                _usage_records_add(counts=fields, hour=datetime.fromtimestamp(hour, UTC))
                for hour, fields in sorted(by_hour.items())
            )
    except IntegrityError:
        # Deferred constraints fail at commit (a key deleted meanwhile): nothing was applied.
        if UsageRollup.objects.filter(claim=name).exists():
            return 0
        raise


def _usage_records_add(*, counts: dict[str, int], hour: datetime) -> int:
    buckets: dict[Bucket, int] = {}
    for field, count in counts.items():
        parts = usage_store.usage_field_parts(field)
        if parts is None or count <= 0 or len(parts[1]) > 20 or len(parts[2]) > 40:
            logger.warning("usage roll-up: skipping malformed counter %r", field[:300])
            continue
        key_id, outcome, code, detail = parts
        # Cleaned again: the store is not trusted to hold only what this version's proxy wrote.
        bucket = (key_id, outcome, code, usage_store.usage_detail(detail))
        buckets[bucket] = buckets.get(bucket, 0) + count
    keys = {
        row["key_id"]: row
        for row in ApiKey.objects.filter(key_id__in={bucket[0] for bucket in buckets}).values(
            "pk", "key_id", "tenant_id"
        )
    }
    buckets = _usage_details_bounded(buckets=buckets, keys=keys, hour=hour)
    added = 0
    # Sorted, so concurrent roll-ups lock the same rows in the same order and cannot deadlock.
    for (key_id, outcome, code, detail), count in sorted(buckets.items()):
        key = keys.get(key_id)
        if key is None:
            continue
        _usage_record_add(
            api_key_id=key["pk"],
            tenant_id=key["tenant_id"],
            hour=hour,
            outcome=outcome,
            code=code,
            detail=detail,
            count=count,
        )
        added += count
    return added


def _usage_details_bounded(*, buckets: dict[Bucket, int], keys: dict, hour: datetime) -> dict[Bucket, int]:
    """The buckets with each key's distinct details in `hour`, those already recorded included, kept
    to USAGE_DETAILS_PER_KEY_HOUR: the most frequent new ones get their own row, the rest go to
    OTHER_DETAIL. (Two roll-ups at once may each admit some: the bound is soft, never unbounded.)"""
    other = usage_store.OTHER_DETAIL
    detailed = {
        keys[key_id]["pk"] for key_id, _, _, detail in buckets if detail not in ("", other) and key_id in keys
    }
    if not detailed:
        return buckets
    recorded: dict[int, set[tuple[str, str, str]]] = defaultdict(set)
    rows = (
        UsageRecord.objects.filter(api_key_id__in=detailed, hour=hour)
        .exclude(detail__in=("", other))
        .values_list("api_key_id", "outcome", "code", "detail")
    )
    for api_key_id, outcome, code, detail in rows:
        recorded[api_key_id].add((outcome, code, detail))
    bounded: dict[Bucket, int] = {}
    for (key_id, outcome, code, detail), count in sorted(
        buckets.items(), key=lambda item: (-item[1], item[0])
    ):
        if detail not in ("", other) and key_id in keys:
            seen = recorded[keys[key_id]["pk"]]
            if (outcome, code, detail) not in seen:
                if len(seen) < USAGE_DETAILS_PER_KEY_HOUR:
                    seen.add((outcome, code, detail))
                else:
                    detail = other
        bucket = (key_id, outcome, code, detail)
        bounded[bucket] = bounded.get(bucket, 0) + count
    return bounded


def _usage_record_add(
    *, api_key_id: int, tenant_id: int, hour: datetime, outcome: str, code: str, detail: str, count: int
) -> None:
    """UPDATE count = count + n, or INSERT; an insert that loses a race becomes the update."""
    bucket = UsageRecord.objects.filter(
        api_key_id=api_key_id, hour=hour, outcome=outcome, code=code, detail=detail
    )
    if bucket.update(count=F("count") + count):
        return
    try:
        with transaction.atomic():
            UsageRecord.objects.create(
                api_key_id=api_key_id,
                tenant_id=tenant_id,
                hour=hour,
                outcome=outcome,
                code=code,
                detail=detail,
                count=count,
            )
    except IntegrityError:
        if not bucket.update(count=F("count") + count):
            raise
