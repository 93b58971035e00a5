"""The jobs as production runs them: a real Celery worker with beat (DatabaseScheduler), Redis as the
broker and PostgreSQL. Skipped on the embedded default (SQLite, no Redis); run in CI.

The worker runs against this test's database; the schedules beat reads are the migration's, made
to fire every second and to use a queue of this test run's own.
"""

import importlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from keys import services, tasks
from keys.models import AccessToken, UsageRecord
from keys.usage import store as usage_store
from keys.usage.store import usage_field, usage_key

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.REDIS_URL or "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="needs PostgreSQL and Redis (DATABASE_URL, REDIS_URL), as CI has",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
SCHEDULES = importlib.import_module("keys.migrations.0003_background_job_schedules")
DEADLINE_SECONDS = 30
ROLL_UPS_DONE = re.compile(r"Task keys\.tasks\.usage_roll_up\[[0-9a-f-]+\] succeeded")


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path, queue: str) -> None:
        self.process, self.log, self.queue = process, log, queue

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, condition, what: str):
        """Poll `condition` until it returns something true; fail with the worker's log at the deadline."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if self.process.poll() is not None:
                pytest.fail(f"the worker exited ({self.process.returncode}):\n{self.output()[-4000:]}")
            time.sleep(0.1)
        pytest.fail(f"{what} within {DEADLINE_SECONDS} s; worker log:\n{self.output()[-4000:]}")

    def wait_for_success(self, task_id: str) -> None:
        self.wait_for(lambda: f"[{task_id}] succeeded" in self.output(), f"task {task_id} did not succeed")


@pytest.fixture
def worker(transactional_db, tmp_path):
    """`celery -A config worker --beat` on this test's database, every job due every second."""
    queue = f"keys-test-{uuid.uuid4().hex[:8]}"
    SCHEDULES.create_schedules(apps, None)  # a transactional test empties the tables before it
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    for task in PeriodicTask.objects.filter(task__startswith="keys.tasks."):
        if task.task != "keys.tasks.usage_trim":
            task.interval = every_second
        task.queue = queue
        task.save()
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE": "0",
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "LOG_LEVEL": "INFO",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "config",
                "worker",
                "--beat",
                "-l",
                "info",
                "--concurrency",
                "1",
                "-Q",
                queue,
                "-s",
                str(tmp_path / "beat-schedule"),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the beat child goes down with it
        )
    handle = Worker(process, log, queue)
    try:
        handle.wait_for(lambda: "ready." in handle.output(), "the worker did not start")
        yield handle
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def test_beat_purges_an_expired_token_through_the_worker(worker, api_key):
    token, _ = services.access_token_issue(api_key=api_key, ttl=1)
    worker.wait_for(lambda: not AccessToken.objects.filter(pk=token.pk).exists(), "the token was not purged")
    assert "Sending due task keys: purge expired and revoked access tokens" in worker.output()


def test_usage_rolled_up_twice_through_the_worker_lands_exactly_once(worker, api_key):
    minute = usage_store.minute_of(time.time()) - 120  # a complete minute
    source = usage_store.usage_source()
    assert isinstance(source, usage_store.RedisUsageSource)
    client = source.client
    client.hincrby(usage_key(minute), usage_field(api_key.key_id, "allowed"), 41)
    client.hincrby(usage_key(minute), usage_field(api_key.key_id, "rejected", "origin_not_allowed"), 1)

    sent = [tasks.usage_roll_up.apply_async(queue=worker.queue) for _ in range(2)]
    for result in sent:
        worker.wait_for_success(result.id)
    # Beat rolls up every second as well: wait for one more of its runs after ours, then count.
    runs = len(ROLL_UPS_DONE.findall(worker.output()))
    worker.wait_for(lambda: len(ROLL_UPS_DONE.findall(worker.output())) > runs, "beat ran no roll-up")

    hour = datetime.fromtimestamp(minute - minute % 3600, UTC)
    counts = {
        (row.hour, row.outcome, row.code): row.count for row in UsageRecord.objects.filter(api_key=api_key)
    }
    assert counts == {(hour, "allowed", ""): 41, (hour, "rejected", "origin_not_allowed"): 1}
    assert not client.exists(usage_key(minute))


ALERT_SCHEDULES = importlib.import_module("keys.migrations.0007_alert_job_schedules")


@pytest.fixture
def alert_jobs(transactional_db, monkeypatch):
    """The alerts job and the webhook retries scheduled too (before the worker fixture sets every
    schedule to each second), and the worker allowed to deliver to a receiver on loopback."""
    ALERT_SCHEDULES.create_schedules(apps, None)
    monkeypatch.setenv("KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK", "1")


def test_beat_evaluates_a_quota_rule_and_the_worker_sends_one_signed_webhook(alert_jobs, worker, tenant):
    import hashlib
    import hmac
    import json

    from django.test import override_settings

    from keys.services import alerts, webhooks
    from keys.tests.webhook_receiver import WebhookReceiver

    key, _ = services.api_key_create(tenant=tenant, name="metered", daily_quota=10, actor="test")
    with WebhookReceiver() as receiver:
        with override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True):
            _, secret = webhooks.webhook_endpoint_create(tenant=tenant, url=receiver.url)
        alerts.alert_rule_create(tenant=tenant, event="quota.threshold", levels=[50, 80, 100])
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        UsageRecord.objects.create(tenant=tenant, api_key=key, hour=hour, outcome="allowed", count=9)

        worker.wait_for(lambda: receiver.received, "no webhook arrived")
        runs = worker.output().count("keys.tasks.alerts_evaluate")
        worker.wait_for(
            lambda: worker.output().count("keys.tasks.alerts_evaluate") >= runs + 4, "beat stopped evaluating"
        )
        assert len(receiver.received) == 1  # later evaluations fire nothing more
        request = receiver.received[0]
        t, v1 = (part.split("=", 1)[1] for part in request.headers["webhook-signature"].split(","))
        expected = hmac.new(secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, v1)
        assert json.loads(request.body)["data"]["level"] == 80
