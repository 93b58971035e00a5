from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from keys import crypto
from keys.management.commands._output import print_json
from keys.models import Upstream


class Command(BaseCommand):
    help = "Re-encrypt every upstream credential under the first KEYS_ENCRYPTION_KEYS key (after a rotation)."

    def handle(self, *args: Any, **options: Any) -> None:
        count = 0
        with transaction.atomic():
            for upstream in Upstream.objects.select_for_update().exclude(auth_value_encrypted=""):
                upstream.auth_value_encrypted = crypto.reencrypt(upstream.auth_value_encrypted)
                upstream.save(update_fields=["auth_value_encrypted"])
                count += 1
        print_json(self, {"reencrypted": count})
