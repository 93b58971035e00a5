from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from keys import services
from keys.management.commands._output import print_json, run_or_fail
from keys.models import Membership, Tenant


class Command(BaseCommand):
    help = "Create a tenant and its owner; print the tenant and a management token as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--owner", required=True, help="The owner's e-mail; they set a password by reset."
        )
        parser.add_argument("--name", default="", help="Display name (default: the slug).")

    def handle(self, *args: Any, slug: str, owner: str, name: str, **options: Any) -> None:
        def create() -> tuple[Tenant, Membership, str]:
            with transaction.atomic():
                tenant, membership = services.tenant_create(
                    slug=slug, owner_email=owner, name=name, actor="create_tenant"
                )
                _, token = services.management_token_create(
                    tenant=tenant, name="bootstrap", actor="create_tenant"
                )
            return tenant, membership, token

        tenant, membership, token = run_or_fail(create)
        print_json(self, {"tenant": tenant.slug, "owner": membership.user.email, "management_token": token})
