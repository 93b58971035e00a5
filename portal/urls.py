from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # The site root leads a visitor to the portal (which sends a signed-out one to log in or sign up).
    path("", RedirectView.as_view(pattern_name="portal:home", permanent=False), name="site-root"),
    path("", include("ops.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("keys.api.urls")),
    path("proxy/", include("proxy.urls")),
    path("portal/", include("keys.portal.urls")),
]
