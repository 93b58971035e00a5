from django.urls import path, re_path
from django.views.generic import RedirectView

from ops import metrics, views

urlpatterns = [
    # The site root leads a visitor to the portal (which sends a signed-out one to log in or sign up).
    path("", RedirectView.as_view(pattern_name="portal:home", permanent=False), name="site-root"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    re_path(r"^demo/echo/?(?P<path>.*)$", views.demo_echo, name="demo-echo"),
]
