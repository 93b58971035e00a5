"""Background jobs: the rules that Celery beat runs (keys/tasks.py), or, without Redis, a thread here.

Each job is a plain function, safe to run twice and to run in two processes at once:
- access_tokens_purge: deletes tokens that expired or were revoked (the proxy refuses them anyway);
- api_keys_expire: records one `api_key.expired` audit event per key and expiry time;
- usage_roll_up (keys/usage/roll_up.py): adds the proxy's per-minute usage counters into hourly
  UsageRecord rows, exactly once (by outcome, rejection code and detail: what the rejection refused);
- usage_trim: deletes usage records, audit events and roll-up markers past their retention.
"""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from keys.job_runs import job_succeeded
from keys.models import AccessToken, ApiKey, AuditEvent, UsageRecord, UsageRollup
from keys.services import audit_record
from keys.sharing import sharing_roll_up
from keys.usage.roll_up import usage_roll_up

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
# Roll-up markers outlive any claim they guard (claims expire from Redis after 3 days).
USAGE_MARKER_RETENTION = timedelta(days=7)
JOB_ACTOR = "background job"


def _delete_in_batches(
    queryset: QuerySet[Any], *, batch_size: int = BATCH_SIZE, quietly: bool = False
) -> int:
    """Delete the rows of `queryset` by id, `batch_size` at a time, each batch in its own transaction.

    Ids are selected first and deleted by id, so two runs at once only race to delete the same rows:
    a row already gone is simply not counted. `quietly`: one DELETE per batch, no row loaded and no
    delete signal, for rows whose going changes nothing the proxy decides (and that nothing refers to).
    """
    model = queryset.model
    deleted = 0
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            batch = model.objects.filter(pk__in=ids)
            if quietly:
                deleted += batch._raw_delete(batch.db)
            else:
                deleted += batch.delete()[1].get(model._meta.label, 0)
        if len(ids) < batch_size:
            return deleted


def access_tokens_purge(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Delete access tokens that have expired or been revoked; returns how many went.

    The proxy refuses such a token on its own fields, so deleting it changes no decision: before the
    purge it answers `token_expired`, after it `invalid_token`, both 401.
    """
    now = now or timezone.now()
    # Quietly: the proxy refuses an expired or revoked token by its own fields, and a revocation was
    # announced when it was made; announcing each purged row would PUBLISH to every process for nothing.
    expired = _delete_in_batches(
        AccessToken.objects.filter(expires_at__lte=now), batch_size=batch_size, quietly=True
    )
    revoked = _delete_in_batches(
        AccessToken.objects.filter(revoked_at__isnull=False), batch_size=batch_size, quietly=True
    )
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
    if api_key.expires_at is None:
        return 0  # not reached: api_keys_expire picks keys that expire
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

# (name, job, every so many seconds)
Schedule = Sequence[tuple[str, Callable[[], object], float]]
_INPROCESS_JOBS: Schedule = (
    ("access_tokens_purge", access_tokens_purge, 60),
    ("api_keys_expire", api_keys_expire, 60),
    ("usage_roll_up", usage_roll_up, 60),
    ("sharing_roll_up", sharing_roll_up, 60),
    ("usage_trim", usage_trim, 86400),
    ("alerts_evaluate", lambda: _alerts_evaluate(), 60),
    ("webhook_deliveries_retry", lambda: _webhook_deliveries_retry(), 60),
)


def _alerts_evaluate() -> int:
    from keys.alerting import alerts_evaluate  # it imports the services, as this module does

    return alerts_evaluate()


def _webhook_deliveries_retry() -> int:
    from keys.services.webhooks import webhook_deliveries_retry

    return webhook_deliveries_retry()


_scheduler: threading.Thread | None = None
_scheduler_lock = threading.Lock()


def run_due_jobs(
    *, last_runs: dict[str, float], now: float, schedule: Schedule = _INPROCESS_JOBS
) -> list[str]:
    """Run each in-process job whose interval has passed since its last run; returns their names.
    A failing job is logged and tried again at its next interval; the others still run."""
    ran = []
    for name, job, every in schedule:
        if now - last_runs.get(name, float("-inf")) < every:
            continue
        last_runs[name] = now
        try:
            job()
            job_succeeded(name)
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
