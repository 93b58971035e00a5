"""When each background job last succeeded, kept in the shared cache (Redis in production).

The jobs run in Celery worker processes, or on a thread of the server without Redis; the web server's
/metrics reads these times at scrape time (ops/metrics.py), whatever process ran the job.
"""

import logging
import time

from django.core.cache import cache

logger = logging.getLogger(__name__)

JOB_NAMES = ("access_tokens_purge", "api_keys_expire", "usage_roll_up", "usage_trim")


def _cache_key(job: str) -> str:
    return f"jobs:last-success:{job}"


def job_succeeded(job: str, *, now: float | None = None) -> None:
    """Record that `job` just succeeded; a cache failure is logged, never raised (the job did its work)."""
    try:
        cache.set(_cache_key(job), time.time() if now is None else now, timeout=None)
    except Exception:  # noqa: BLE001
        logger.warning("could not record the success of job %s", job, exc_info=True)


def jobs_last_success() -> dict[str, float]:
    """The last success time (Unix seconds) of each job that has one; empty when the cache fails."""
    try:
        found = cache.get_many([_cache_key(job) for job in JOB_NAMES])
    except Exception:  # noqa: BLE001
        logger.warning("could not read the jobs' last success times", exc_info=True)
        return {}
    return {job: float(found[_cache_key(job)]) for job in JOB_NAMES if _cache_key(job) in found}
