"""Liveness and readiness (DESIGN.md "Operations")."""

import time

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from keys.job_runs import JOB_NAMES, job_succeeded

DEAD_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def test_healthz_answers_200_while_the_process_runs(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_needs_no_database(client):
    # No db fixture: a database query here would raise, so liveness checks nothing but the process.
    assert client.get("/healthz").status_code == 200


def test_readyz_answers_200_when_database_and_cache_answer(client, db, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded default: no beat to report
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "cache": "ok"}}
    assert cache.get("readyz") == "1"  # it really wrote to the configured cache


@pytest.mark.filterwarnings("ignore")
def test_readyz_answers_503_when_the_cache_is_down(client, db, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with override_settings(CACHES=DEAD_REDIS):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "checks": {"database": "ok", "cache": "unavailable"}}


@pytest.mark.parametrize(
    ("last_success_ago", "expected"),
    [(None, {"status": "unknown", "last_job_success_age_seconds": None}), (30, "ok"), (600, "stale")],
)
def test_readyz_reports_beat_freshness_where_celery_runs_without_failing_on_it(
    client, db, settings, last_success_ago, expected
):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a worker and beat run the jobs
    settings.OPS_BEAT_STALE_SECONDS = 180
    cache.delete_many([f"jobs:last-success:{job}" for job in JOB_NAMES])
    if last_success_ago is not None:
        job_succeeded("usage_roll_up", now=time.time() - last_success_ago)
    response = client.get("/readyz")
    assert response.status_code == 200
    beat = response.json()["beat"]
    if isinstance(expected, dict):
        assert beat == expected
    else:
        assert beat["status"] == expected
        assert abs(beat["last_job_success_age_seconds"] - last_success_ago) < 5


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_and_readiness_never_redirect_under_the_production_https_redirect(db, settings, path):
    # DJANGO_SECURE (on by default outside debug) turns on SECURE_SSL_REDIRECT; a load balancer's probe
    # speaks plain HTTP and does not follow a 301.
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get(path)  # a new client: the security middleware reads its settings at start
    assert response.status_code == 200, response.get("Location")


def test_other_pages_still_redirect_to_https_under_the_production_default(db, settings):
    settings.SECURE_SSL_REDIRECT = True
    response = Client().get("/portal/login")
    assert response.status_code == 301 and response["Location"].startswith("https://")
