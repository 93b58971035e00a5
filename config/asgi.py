import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_asgi_application()

from keys.jobs import inprocess_jobs_start  # noqa: E402

inprocess_jobs_start()  # only without Redis: the background jobs on a thread of this server process
