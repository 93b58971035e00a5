import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from proxy.wsgi import with_proxy_fast_path  # noqa: E402  (needs the settings module chosen above)

application = with_proxy_fast_path(get_wsgi_application())
