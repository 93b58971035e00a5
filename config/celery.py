"""The Celery app: configured from Django settings (CELERY_*), tasks found in each app's tasks.py."""

import logging.config
import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("keyportal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _django_logging(**_: object) -> None:
    """Worker and beat log as the server does (settings.LOGGING: JSON lines in production), instead of
    Celery replacing the root logger's handlers with its own text format."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
