"""Operational endpoints: liveness, readiness, and the demo upstream of the embedded default."""

import json
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from keys.job_runs import jobs_last_success

logger = logging.getLogger(__name__)


HEALTHY = {"status": "ok"}


def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the process runs; it checks nothing else, so a load balancer never kills a busy process.
    Under bin/serve the server's event loop answers it first (ops/liveness.py)."""
    return JsonResponse(HEALTHY)


def _beat() -> dict[str, object]:
    """Whether Celery beat (and a worker) keep the background jobs running: the age of the latest job
    success. `stale` past OPS_BEAT_STALE_SECONDS, `unknown` before any job succeeded (or when the cache
    cannot say). It does not make the server unready: the proxy serves without beat."""
    successes = jobs_last_success()
    if not successes:
        return {"status": "unknown", "last_job_success_age_seconds": None}
    age = max(0.0, time.time() - max(successes.values()))
    return {
        "status": "ok" if age <= settings.OPS_BEAT_STALE_SECONDS else "stale",
        "last_job_success_age_seconds": round(age, 1),
    }


def readyz(request: HttpRequest) -> JsonResponse:
    """200 only when the database and the cache answer; 503 with what failed otherwise. Where Celery
    runs (REDIS_URL set), `beat` says how fresh the background jobs are (never a cause of 503)."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure means not ready
        logger.exception("readiness: database check failed")
        checks["database"] = "unavailable"
    try:
        cache.set("readyz", "1", timeout=5)
        checks["cache"] = "ok" if cache.get("readyz") == "1" else "unavailable"
    except Exception:  # noqa: BLE001
        logger.exception("readiness: cache check failed")
        checks["cache"] = "unavailable"
    ready = all(state == "ok" for state in checks.values())
    body: dict[str, object] = {"status": "ready" if ready else "not_ready", "checks": checks}
    if not settings.CELERY_TASK_ALWAYS_EAGER:  # a worker and beat run the jobs
        body["beat"] = _beat()
    return JsonResponse(body, status=200 if ready else 503)


@csrf_exempt
def demo_echo(request: HttpRequest, path: str = "") -> JsonResponse:
    """The demo upstream: says what it received, so a first proxied call shows the relay at work.
    It reports whether the upstream credential arrived, never its value."""
    if not settings.DEMO_ECHO_ENABLED:
        raise Http404
    body = request.body.decode("utf-8", "replace")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    rpc_id = parsed.get("id") if isinstance(parsed, dict) else None
    return JsonResponse(
        {
            "upstream": "demo echo",
            "method": request.method,
            "path": "/" + path,
            "query": request.GET.dict(),
            "upstream_credential_received": request.headers.get("Authorization")
            == "Bearer demo-upstream-credential",
            "json": parsed,
            "jsonrpc": "2.0" if rpc_id is not None else None,
            "id": rpc_id,
            "result": "0x1" if rpc_id is not None else None,
        }
    )
