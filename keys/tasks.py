"""Celery tasks: thin wrappers that beat schedules (django-celery-beat, editable in the admin).

The rules are in keys/jobs.py; each task only calls one job, records its success (keys/job_runs.py, for
/metrics) and returns what it did, for the log.
Without Redis there is no worker or beat: the server process runs the same jobs on a thread
(keys.jobs.inprocess_jobs_start), and a task called with .delay() runs at once (eager mode).
"""

from celery import shared_task

from keys import alerting, jobs, sharing
from keys.job_runs import job_succeeded
from keys.usage import roll_up


@shared_task
def access_tokens_purge() -> int:
    """Delete expired and revoked access tokens."""
    done = jobs.access_tokens_purge()
    job_succeeded("access_tokens_purge")
    return done


@shared_task
def api_keys_expire() -> int:
    """Record `api_key.expired` once for each key past its expiry."""
    done = jobs.api_keys_expire()
    job_succeeded("api_keys_expire")
    return done


@shared_task
def usage_roll_up() -> int:
    """Add complete minutes of usage counters into hourly UsageRecord rows, exactly once."""
    done = roll_up.usage_roll_up()
    sharing.sharing_roll_up()  # the key-sharing sketches of today and yesterday, on the same beat
    job_succeeded("usage_roll_up")
    return done


@shared_task
def usage_trim() -> dict[str, int]:
    """Delete usage records and audit events past their retention."""
    done = jobs.usage_trim()
    job_succeeded("usage_trim")
    return done


@shared_task
def alerts_evaluate() -> int:
    """Evaluate the tenants' alert rules from usage records and the audit trail; fire what crossed."""
    done = alerting.alerts_evaluate()
    job_succeeded("alerts_evaluate")
    return done


@shared_task
def webhook_deliver(delivery_id: int) -> str:
    """The first attempt of one webhook delivery (retries are made by webhook_deliveries_retry)."""
    from keys.services import webhooks

    return webhooks.webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task
def webhook_deliveries_retry() -> int:
    """Attempt the webhook deliveries whose backoff has passed."""
    from keys.services import webhooks

    done = webhooks.webhook_deliveries_retry()
    job_succeeded("webhook_deliveries_retry")
    return done
