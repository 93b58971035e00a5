"""Accounts: password reset and accepting an invitation."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from keys.portal.common import page


def password_reset(request: HttpRequest) -> HttpResponse:
    # Placeholder until the page is built.
    return page(request, "portal/placeholder.html", {"title": "Reset your password"})


urlpatterns = [
    path("password-reset", password_reset, name="password_reset"),
]
