"""The background jobs' schedules in django-celery-beat (DESIGN.md "Operations": at least every minute).

Staff edit them in the admin (Periodic tasks). Idempotent: a schedule or task that exists is kept as
it is, so running this again, or after staff changed an interval, changes nothing.
"""

from django.db import migrations
from django.utils import timezone

JOBS = [
    # (periodic task name, task, every, period)
    ("keys: purge expired and revoked access tokens", "keys.tasks.access_tokens_purge", 60, "seconds"),
    ("keys: record expired API keys", "keys.tasks.api_keys_expire", 60, "seconds"),
    ("keys: roll usage counters up", "keys.tasks.usage_roll_up", 60, "seconds"),
    ("keys: trim old usage and audit events", "keys.tasks.usage_trim", 1, "days"),
]


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    created = False
    for name, task, every, period in JOBS:
        interval = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
        if interval is None:
            interval = IntervalSchedule.objects.create(every=every, period=period)
        _, new = PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": interval, "enabled": True}
        )
        created = created or new
    if created:
        # What a save through the real model's signal does: tell a running beat to reload its schedule.
        PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _, _ in JOBS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_usage_rollup_and_key_expiry"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
