from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys import services
from keys.management.commands._output import print_json, run_or_fail, upstream_fields
from keys.models import AuthType, Tenant


class Command(BaseCommand):
    help = "Create an upstream (global unless --tenant); print its fields, without the credential, as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("base_url")
        parser.add_argument("--tenant", help="The owning tenant's slug; omit for a global upstream.")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--websocket-url", default="", help="ws or wss; omit to derive it from the base URL."
        )
        parser.add_argument(
            "--allow-private-network", action="store_true", help="Allow loopback and private addresses."
        )
        parser.add_argument("--auth-type", choices=AuthType.values, default=AuthType.NONE)
        parser.add_argument("--auth-name", default="")
        parser.add_argument("--auth-value", default="", help="Stored encrypted and never printed.")
        parser.add_argument("--timeout", type=int, default=30, help="Total deadline per request, in seconds.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = None
        if options["tenant"]:
            tenant = Tenant.objects.filter(slug=options["tenant"]).first()
            if tenant is None:
                raise CommandError(f"No tenant {options['tenant']!r}.")
        upstream = run_or_fail(
            lambda: services.upstream_create(
                tenant=tenant,
                slug=options["slug"],
                base_url=options["base_url"],
                name=options["name"],
                websocket_url=options["websocket_url"],
                auth_type=options["auth_type"],
                auth_name=options["auth_name"],
                auth_value=options["auth_value"],
                timeout_seconds=options["timeout"],
                allow_private_network=options["allow_private_network"],
                actor="create_upstream",
                actor_is_staff=True,  # an operator at the shell is staff
            )
        )
        print_json(self, upstream_fields(upstream))
