"""Background jobs: the rules that Celery beat runs (keys/tasks.py), or, without Redis, a thread here.

Each job is a plain function, safe to run twice and to run in two processes at once:
- access_tokens_purge: deletes tokens that expired or were revoked (the proxy refuses them anyway);
- api_keys_expire: records one `api_key.expired` audit event per key and expiry time;
- usage_roll_up: adds the proxy's per-minute usage counters into hourly UsageRecord rows, exactly once
  (by outcome, rejection code and detail: what the rejection refused);
- usage_trim: deletes usage records, audit events and roll-up markers past their retention.
"""

import logging
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from keys import usage_store
from keys.models import AccessToken, ApiKey, AuditEvent, UsageRecord, UsageRollup
from keys.services import audit_record

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
# A roll-up still holding a claim after this long is taken to have died; another one finishes it.
USAGE_CLAIM_STALE_SECONDS = 300
# Roll-up markers outlive any claim they guard (claims expire from Redis after 3 days).
USAGE_MARKER_RETENTION = timedelta(days=7)
# Distinct rejection details a key keeps per hour (whatever the processes and minutes they came from);
# the rest add up under OTHER_DETAIL, so random origins or user agents cannot grow the table unbounded.
USAGE_DETAILS_PER_KEY_HOUR = 100
JOB_ACTOR = "background job"


def _delete_in_batches(queryset, *, batch_size: int = BATCH_SIZE) -> int:
    """Delete the rows of `queryset` by id, `batch_size` at a time, each batch in its own transaction.

    Ids are selected first and deleted by id, so two runs at once only race to delete the same rows:
    a row already gone is simply not counted.
    """
    model = queryset.model
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            _, per_model = model.objects.filter(pk__in=ids).delete()
        deleted += per_model.get(model._meta.label, 0)
        if len(ids) < batch_size:
            return deleted


def access_tokens_purge(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Delete access tokens that have expired or been revoked; returns how many went.

    The proxy refuses such a token on its own fields, so deleting it changes no decision: before the
    purge it answers `token_expired`, after it `invalid_token`, both 401.
    """
    now = now or timezone.now()
    expired = _delete_in_batches(AccessToken.objects.filter(expires_at__lte=now), batch_size=batch_size)
    revoked = _delete_in_batches(AccessToken.objects.filter(revoked_at__isnull=False), batch_size=batch_size)
    return expired + revoked


def api_keys_expire(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Record `api_key.expired` once for each key past its expiry; returns how many were recorded.

    The proxy already refuses a key past `expires_at`; this writes the audit trail. A key's
    `expiry_recorded_for` is set to the expiry it recorded with a compare-and-set update in the
    event's transaction, so a rerun or a concurrent run writes no second event, and a key whose
    expiry is moved later and passed again gets a new one.
    """
    now = now or timezone.now()
    due = (
        ApiKey.objects.filter(expires_at__lte=now, revoked_at__isnull=True)
        .filter(Q(expiry_recorded_for__isnull=True) | ~Q(expiry_recorded_for=F("expires_at")))
        .order_by("pk")
    )
    recorded, last_pk = 0, 0
    while True:
        batch = list(due.filter(pk__gt=last_pk).select_related("tenant")[:batch_size])
        for api_key in batch:
            recorded += _api_key_record_expiry(api_key=api_key)
        if len(batch) < batch_size:
            return recorded
        last_pk = batch[-1].pk


@transaction.atomic
def _api_key_record_expiry(*, api_key: ApiKey) -> int:
    won = (
        ApiKey.objects.filter(pk=api_key.pk, expires_at=api_key.expires_at)
        .filter(Q(expiry_recorded_for__isnull=True) | ~Q(expiry_recorded_for=F("expires_at")))
        .update_quietly(expiry_recorded_for=F("expires_at"))  # no policy changes: it is expired already
    )
    if not won:
        return 0  # another run recorded it, or the expiry changed meanwhile
    audit_record(
        action="api_key.expired",
        tenant=api_key.tenant,
        actor=JOB_ACTOR,
        target=api_key,
        data={"expires_at": api_key.expires_at.isoformat()},
    )
    return 1


def usage_roll_up(*, source=None, now: float | None = None, stale_after: float | None = None) -> int:
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


def usage_trim(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """Delete usage records older than KEYS_USAGE_RETENTION_DAYS, audit events older than
    KEYS_AUDIT_RETENTION_DAYS (0 keeps them for ever) and spent roll-up markers; returns the counts."""
    now = now or timezone.now()
    usage_cutoff = now - timedelta(days=settings.KEYS_USAGE_RETENTION_DAYS)
    trimmed = {
        "usage_records": _delete_in_batches(
            UsageRecord.objects.filter(hour__lt=usage_cutoff), batch_size=batch_size
        ),
        "audit_events": 0,
        "usage_rollups": _delete_in_batches(
            UsageRollup.objects.filter(created_at__lt=now - USAGE_MARKER_RETENTION), batch_size=batch_size
        ),
    }
    if settings.KEYS_AUDIT_RETENTION_DAYS > 0:
        audit_cutoff = now - timedelta(days=settings.KEYS_AUDIT_RETENTION_DAYS)
        trimmed["audit_events"] = _delete_in_batches(
            AuditEvent.objects.filter(created_at__lt=audit_cutoff), batch_size=batch_size
        )
    return trimmed


# --- Without Redis: the same jobs on a thread of the server process --------------------------------

_INPROCESS_JOBS = (
    ("access_tokens_purge", access_tokens_purge, 60),
    ("api_keys_expire", api_keys_expire, 60),
    ("usage_roll_up", usage_roll_up, 60),
    ("usage_trim", usage_trim, 86400),
)
_scheduler: threading.Thread | None = None
_scheduler_lock = threading.Lock()


def run_due_jobs(*, last_runs: dict[str, float], now: float, schedule=_INPROCESS_JOBS) -> list[str]:
    """Run each in-process job whose interval has passed since its last run; returns their names.
    A failing job is logged and tried again at its next interval; the others still run."""
    ran = []
    for name, job, every in schedule:
        if now - last_runs.get(name, float("-inf")) < every:
            continue
        last_runs[name] = now
        try:
            job()
            ran.append(name)
        except Exception:
            logger.exception("in-process job %s failed", name)
        finally:
            if not connection.in_atomic_block:  # (a test's transaction is not ours to close)
                close_old_connections()
    return ran


def inprocess_jobs_start() -> bool:
    """Start the job thread in this server process when there is no Redis (so no worker or beat) and
    KEYS_INPROCESS_JOBS is on. Returns whether a thread runs. Calling it again starts no second one."""
    global _scheduler
    if settings.REDIS_URL or not settings.KEYS_INPROCESS_JOBS:
        return False
    with _scheduler_lock:
        if _scheduler is None:
            _scheduler = threading.Thread(target=_inprocess_jobs_loop, name="keys-jobs", daemon=True)
            _scheduler.start()
    return True


def _inprocess_jobs_loop() -> None:
    last_runs: dict[str, float] = {}  # every job is due at the first tick, one interval after start
    while True:
        time.sleep(settings.KEYS_INPROCESS_JOBS_SECONDS)
        run_due_jobs(last_runs=last_runs, now=time.time())
