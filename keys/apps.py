from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from keys import signals, system_checks  # noqa: F401  (registers the receivers and system checks)
