"""System checks for configuration that would weaken the product in production."""

from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet
from django.apps import AppConfig
from django.conf import settings
from django.core import checks

from keys.client_address import trusted_proxy_network

AppConfigs = Sequence[AppConfig] | None  # the apps to check; None: every app


@checks.register(checks.Tags.security, deploy=True)
def check_encryption_keys(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    if not settings.KEYS_ENCRYPTION_KEYS:
        return [
            checks.Warning(
                "KEYS_ENCRYPTION_KEYS is not set: upstream credentials are encrypted with a key derived "
                "from SECRET_KEY, so rotating SECRET_KEY makes them unreadable.",
                hint="Set KEYS_ENCRYPTION_KEYS to one or more Fernet keys (Fernet.generate_key()).",
                id="keys.W001",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_encryption_keys_valid(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for position, key in enumerate(settings.KEYS_ENCRYPTION_KEYS):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                checks.Error(
                    f"KEYS_ENCRYPTION_KEYS entry {position} is not a valid Fernet key.",
                    hint="Each key is 32 url-safe base64-encoded bytes (Fernet.generate_key()).",
                    id="keys.E001",
                )
            )
    return errors


@checks.register(checks.Tags.security)
def check_trusted_proxies(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    # At run time a bad entry trusts nobody (every client then looks like the balancer): say so at start.
    return [
        checks.Error(
            f"PROXY_TRUSTED_PROXIES entry {entry!r} is not an IP address or CIDR network.",
            hint="List load balancers as addresses or networks without host bits set, e.g. 10.0.0.0/8.",
            id="keys.E002",
        )
        for entry in settings.PROXY_TRUSTED_PROXIES
        if trusted_proxy_network(entry) is None
    ]
