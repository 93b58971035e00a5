from django.urls import re_path

from proxy.hosts import RELAY_PATH
from proxy.wsgi import relay

urlpatterns = [re_path(RELAY_PATH, relay, name="relay")]
