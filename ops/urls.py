from django.urls import path, re_path

from ops import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    re_path(r"^demo/echo/?(?P<path>.*)$", views.demo_echo, name="demo-echo"),
]
