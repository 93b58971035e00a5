"""Liveness and readiness (DESIGN.md "Operations")."""

import pytest
from django.core.cache import cache
from django.test import override_settings

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


def test_readyz_answers_200_when_database_and_cache_answer(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "cache": "ok"}}
    assert cache.get("readyz") == "1"  # it really wrote to the configured cache


@pytest.mark.filterwarnings("ignore")
def test_readyz_answers_503_when_the_cache_is_down(client, db):
    with override_settings(CACHES=DEAD_REDIS):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not_ready", "checks": {"database": "ok", "cache": "unavailable"}}
