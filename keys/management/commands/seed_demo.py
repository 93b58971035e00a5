import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from keys import services
from keys.management.commands._output import print_json, run_or_fail
from keys.models import ApiKey, AuthType, EmailConfirmation, Tenant, Upstream

DEMO_TENANT = "demo"
DEMO_UPSTREAM = "demo-echo"
DEMO_KEY_NAME = "demo key"
DEMO_ADMIN = "admin"
DEMO_OWNER_EMAIL = "owner@demo.example"
# The demo upstream's own credential: the echo says whether it arrived, showing injection at work.
DEMO_UPSTREAM_CREDENTIAL = "demo-upstream-credential"  # noqa: S105 - a demo value, not a secret


class Command(BaseCommand):
    help = (
        "Seed the demo used by the embedded default: tenant, owner, upstream, key and a staff user. "
        "Safe to run again: it keeps the key id and gives the key and the staff user fresh secrets, "
        "printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--upstream-url", default=None, help="Default: the DEMO_UPSTREAM_URL setting.")

    def handle(self, *args: Any, upstream_url: str | None, **options: Any) -> None:
        upstream_url = upstream_url or settings.DEMO_UPSTREAM_URL
        with transaction.atomic():
            tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
            if tenant is None:
                tenant, _ = run_or_fail(
                    lambda: services.tenant_create(
                        slug=DEMO_TENANT,
                        name="Demo tenant",
                        owner_email=DEMO_OWNER_EMAIL,
                        actor="seed_demo",
                    )
                )
            upstream = Upstream.objects.filter(slug=DEMO_UPSTREAM).first()
            upstream_fields: dict[str, Any] = {
                "base_url": upstream_url,
                "name": "Demo echo upstream",
                "auth_type": AuthType.BEARER,
                "auth_name": "",
            }
            if upstream is None:
                upstream = run_or_fail(
                    lambda: services.upstream_create(
                        tenant=None,
                        slug=DEMO_UPSTREAM,
                        auth_value=DEMO_UPSTREAM_CREDENTIAL,
                        allow_private_network=True,  # the echo runs on this machine
                        actor="seed_demo",
                        actor_is_staff=True,
                        **upstream_fields,
                    )
                )
            else:
                run_or_fail(
                    lambda: services.upstream_update(
                        upstream=upstream,
                        auth_value=DEMO_UPSTREAM_CREDENTIAL,
                        allow_private_network=True,  # still this machine, whatever PORT this run uses
                        actor="seed_demo",
                        actor_is_staff=True,
                        **upstream_fields,
                    )
                )
            api_key = ApiKey.objects.filter(
                tenant=tenant, name=DEMO_KEY_NAME, revoked_at__isnull=True
            ).first()
            if api_key is None:
                api_key, secret = services.api_key_create(
                    tenant=tenant,
                    name=DEMO_KEY_NAME,
                    upstreams=[upstream],
                    allowed_origins=["http://localhost:8000", "http://127.0.0.1:8000"],
                    rate_limit="600/m",
                    actor="seed_demo",
                )
            else:
                secret = services.api_key_rotate(api_key=api_key, grace=timedelta(0), actor="seed_demo")
            # The tenant's owner signs in to the portal; like the staff user, a fresh password each run.
            owner_password = secrets.token_urlsafe(12)
            owner = services.user_get_or_create(email=DEMO_OWNER_EMAIL)
            owner.set_password(owner_password)
            owner.save(update_fields=["password"])
            # The demo's made-up address cannot receive mail: the operator vouches for it instead.
            services.email_confirm(user=owner, method=EmailConfirmation.Method.OPERATOR)
            admin_password = secrets.token_urlsafe(12)
            admin = get_user_model().objects.filter(username=DEMO_ADMIN).first() or get_user_model()(
                username=DEMO_ADMIN, email="admin@demo.example", is_staff=True, is_superuser=True
            )
            admin.set_password(admin_password)
            admin.save()
        print_json(
            self,
            {
                "tenant": tenant.slug,
                "upstream": upstream.slug,
                "upstream_url": upstream.base_url,
                "key": api_key.key_id,
                "secret": secret,
                "allowed_origins": api_key.allowed_origins,
                "owner": {"email": DEMO_OWNER_EMAIL, "password": owner_password},
                "admin": {"username": DEMO_ADMIN, "password": admin_password},
            },
        )
