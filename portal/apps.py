from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The tenant web UI: pages over keys.services and keys.selectors; no models of its own."""

    name = "portal"
