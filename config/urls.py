from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("keys.api.urls")),
    path("proxy/", include("proxy.urls")),
    path("portal/", include("portal.urls")),
]
