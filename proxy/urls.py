from django.urls import re_path

from proxy import views

# DESIGN.md: ANY /proxy/<upstream>/<key_id>/<path>; with no path (with or without the slash) the
# call goes to the upstream's base URL itself. proxy/wsgi.py serves the same pattern on its fast path.
RELAY_PATH = r"^(?P<upstream_slug>[a-z0-9-]+)/(?P<key_id>[^/]+)(?:/(?P<path>.*))?$"

urlpatterns = [re_path(RELAY_PATH, views.relay, name="relay")]
