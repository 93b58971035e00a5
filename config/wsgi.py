import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

site = get_wsgi_application()  # sets Django up; the proxy's modules need it

from keys.jobs import inprocess_jobs_start  # noqa: E402
from proxy.wsgi import with_proxy_fast_path  # noqa: E402

application = with_proxy_fast_path(site)
inprocess_jobs_start()  # only without Redis: the background jobs on a thread of this server process
