"""System checks for configuration that would weaken the product in production."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def check_encryption_keys(app_configs, **kwargs):
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
def check_encryption_keys_valid(app_configs, **kwargs):
    errors = []
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
