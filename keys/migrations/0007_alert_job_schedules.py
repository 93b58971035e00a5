"""Beat schedules of the alerts job and the webhook retries (every minute), as 0003 made the others.
Idempotent: a task that exists is kept as staff left it."""

from django.db import migrations
from django.utils import timezone

JOBS = [
    ("keys: evaluate alert rules", "keys.tasks.alerts_evaluate", 60, "seconds"),
    ("keys: retry webhook deliveries", "keys.tasks.webhook_deliveries_retry", 60, "seconds"),
]


def create_schedules(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    for name, task, every, period in JOBS:
        interval = IntervalSchedule.objects.filter(every=every, period=period).order_by("pk").first()
        if interval is None:
            interval = IntervalSchedule.objects.create(every=every, period=period)
        PeriodicTask.objects.get_or_create(name=name, defaults={"task": task, "interval": interval, "enabled": True})
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def delete_schedules(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _, _ in JOBS]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0006_alerts_webhooks_leaks"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
