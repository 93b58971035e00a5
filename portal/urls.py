from django.contrib.auth import views as auth_views
from django.urls import path, register_converter

from portal import accounts, alerts, audit, members, tokens, upstreams, usage, views


class KeyIdConverter:
    """A key id's shape (pk_ and base62), so that no other text in the URL reaches a query (PostgreSQL
    refuses a NUL, for one): anything else is simply no page."""

    regex = "pk_[0-9A-Za-z]{1,64}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(KeyIdConverter, "key_id")

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("signup", views.signup, name="signup"),
    path("login", views.PortalLoginView.as_view(), name="login"),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    path("tenant", views.tenant_switch, name="tenant_switch"),
    path("keys", views.key_list, name="key_list"),
    path("keys/new", views.key_create, name="key_create"),
    path("keys/<key_id:key_id>", views.key_detail, name="key_detail"),
    path("keys/<key_id:key_id>/edit", views.key_edit, name="key_edit"),
    path("keys/<key_id:key_id>/checks", views.key_check, name="key_check"),
    path("keys/<key_id:key_id>/rotate", views.key_rotate, name="key_rotate"),
    path("keys/<key_id:key_id>/revoke", views.key_revoke, name="key_revoke"),
    # Each area lists its own routes next to its views.
    *accounts.urlpatterns,
    *members.urlpatterns,
    *upstreams.urlpatterns,
    *tokens.urlpatterns,
    *audit.urlpatterns,
    *usage.urlpatterns,
    *alerts.urlpatterns,
]
