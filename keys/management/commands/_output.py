"""What the operator commands share: one JSON object on stdout, validation errors as CommandError."""

import json
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from keys.models import Upstream

T = TypeVar("T")


def print_json(command: BaseCommand, payload: dict[str, Any]) -> None:
    command.stdout.write(json.dumps(payload, sort_keys=False))


def run_or_fail(action: Callable[[], T]) -> T:
    """Run a service; turn its ValidationError into a CommandError that names each field."""
    try:
        return action()
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            detail = "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
        else:
            detail = " ".join(exc.messages)
        raise CommandError(detail) from exc


def upstream_fields(upstream: Upstream) -> dict[str, Any]:
    """The upstream as DESIGN.md's JSON, without the credential's value."""
    return {
        "slug": upstream.slug,
        "name": upstream.name,
        "base_url": upstream.base_url,
        "websocket_url": upstream.websocket_url,
        "auth": {"type": upstream.auth_type, "name": upstream.auth_name},
        "timeout_seconds": upstream.timeout_seconds,
        "is_active": upstream.is_active,
        "tenant": upstream.tenant.slug if upstream.tenant else None,
        "allow_private_network": upstream.allow_private_network,
    }
