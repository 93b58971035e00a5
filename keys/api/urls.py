"""/api/: the management API (v1), its OpenAPI schema and its docs. Any other path under /api/ answers
404 in the contract's error body."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from keys.api import alerts, exchange, views
from keys.api import schema as _schema  # noqa: F401 - registers the authenticators' OpenAPI schemes

router = SimpleRouter(trailing_slash=False)
router.register("keys", views.KeyViewSet, basename="api-key")
router.register("upstreams", views.UpstreamViewSet, basename="api-upstream")
router.register("management-tokens", views.ManagementTokenViewSet, basename="api-management-token")
router.register("members", views.MemberViewSet, basename="api-member")
router.register("webhooks", alerts.WebhookViewSet, basename="api-webhook")
router.register("alerts", alerts.AlertRuleViewSet, basename="api-alert")

v1 = [
    path("tenant", views.TenantView.as_view(), name="api-tenant"),
    path("tokens", exchange.AccessTokenView.as_view(), name="api-tokens"),
    path("secret-scanning/github", alerts.GitHubSecretScanningView.as_view(), name="api-secret-scanning"),
    *router.urls,
]

urlpatterns = [
    path("v1/", include(v1)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^", views.NotFoundView.as_view(), name="api-not-found"),
]
