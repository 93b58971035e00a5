"""/metrics: the server's Prometheus metrics, for the readers METRICS_ALLOWED_IPS and METRICS_TOKEN let in.

Under bin/serve (PROMETHEUS_MULTIPROC_DIR set) every worker writes its values to files in one directory,
and a scrape, whichever worker answers it, adds them up: one view of the whole server. Workers that
have gone (granian has no exit hook) are swept at scrape time, so live* gauges stop counting them;
their counters stay in the totals. Without the directory (tests, runserver) this process's registry.
The background jobs' last success times come from the shared cache (keys/job_runs.py), read at scrape.
"""

import hmac
import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from keys.client_address import client_address
from keys.errors import ERROR_STATUS, error_json
from keys.job_runs import jobs_last_success
from keys.request_ids import request_id

_PID_OF_FILE = re.compile(r"_(\d+)\.db$")


class JobsCollector(Collector):
    """keys_job_last_success_timestamp_seconds{job}, read from the cache when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "keys_job_last_success_timestamp_seconds",
            "When each background job last succeeded (Unix time).",
            labels=["job"],
        )
        for job, at in sorted(jobs_last_success().items()):
            family.add_metric([job], at)
        yield family


_jobs = JobsCollector()
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    REGISTRY.register(_jobs)  # the in-process registry, which the proxy's metrics are in too


def _sweep_dead_workers(directory: str) -> None:
    """Forget the live gauges of worker processes that no longer run."""
    pids = {int(m.group(1)) for name in os.listdir(directory) if (m := _PID_OF_FILE.search(name))}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            pass  # it runs, as someone else


def _registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not Path(directory).is_dir():
        return REGISTRY
    _sweep_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(_jobs)
    return registry


def _allowed_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            if ip in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue  # a bad entry lets nobody in
    return False


def _refusal(request: HttpRequest) -> HttpResponse | None:
    code = None
    if not _allowed_address(client_address(request)):
        code, message = "permission_denied", "Metrics are not served to this address (METRICS_ALLOWED_IPS)."
    elif token := settings.METRICS_TOKEN:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            code, message = "not_authenticated", "Metrics need Authorization: Bearer <METRICS_TOKEN>."
    if code is None:
        return None
    response = HttpResponse(
        error_json(code, message, request_id(request)),
        status=ERROR_STATUS[code],
        content_type="application/json",
        headers={"X-Request-Id": request_id(request), "Cache-Control": "no-store"},
    )
    if code == "not_authenticated":
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of the whole server's metrics."""
    if (refusal := _refusal(request)) is not None:
        return refusal
    return HttpResponse(
        generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"}
    )
