"""The production application (bin/serve runs it under granian's ASGI interface): /proxy/ goes to the
async gateway (proxy/gateway.py) straight from the server, everything else to Django's ASGI handler."""

import os

from django.core.asgi import get_asgi_application

from config import granian_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
granian_signals.install()  # before granian sets this worker's signal handlers

site = get_asgi_application()  # sets Django up; the proxy's modules need it

from keys.jobs import inprocess_jobs_start  # noqa: E402
from proxy.gateway import with_async_proxy  # noqa: E402

application = with_async_proxy(site)
inprocess_jobs_start()  # only without Redis: the background jobs on a thread of this server process
