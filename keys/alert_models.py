"""Alert rules, the firings that keep them from repeating, webhook endpoints and their deliveries.

A webhook endpoint's signing secret must be read back to sign each delivery, so it is stored encrypted
(crypto.encrypt, as upstream credentials are), never hashed, and shown in clear only once.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from keys.models import ApiKey, Tenant


class AlertEvent(models.TextChoices):
    """The kinds of events a rule watches and a webhook endpoint subscribes to (the webhook `type`)."""

    QUOTA_THRESHOLD = "quota.threshold", "Daily quota reaches a level"
    RATE_LIMITED_SHARE = "rate_limited.share", "Rate-limit refusals above a share of calls"
    UPSTREAM_ERRORS_SHARE = "upstream_errors.share", "Upstream errors above a share of calls"
    REJECTIONS_SPIKE = "rejections.spike", "Rejections spike for a key"
    KEY_EXPIRING = "key.expiring", "Key expires within N days"
    KEY_UNUSED = "key.unused", "Key unused for N days"
    KEY_SHARING = "key.sharing_suspected", "Key looks shared (sharing signal)"
    KEY_REVOKED = "key.revoked", "Key revoked"
    KEY_ROTATED = "key.rotated", "Key rotated"
    KEY_LEAKED = "key.leaked", "Secret or token reported leaked"


# Events only webhooks receive (no rule makes them): the portal's and API's "send test event".
WEBHOOK_ONLY_EVENTS = ("webhook.test",)


def _empty_list() -> list[object]:
    return []


class AlertRule(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alert_rules")
    event = models.CharField(max_length=40, choices=AlertEvent.choices)
    api_key = models.ForeignKey(
        ApiKey,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Empty: every key of the tenant.",
    )
    # quota.threshold: the percentages of the daily quota that each fire once a day.
    levels = models.JSONField(default=_empty_list, blank=True)
    # *.share: the share of calls (percent) over the window; rejections.spike: the window's rejections
    # as a percentage of the hourly average of the 24 hours before (300: three times as many).
    threshold = models.PositiveIntegerField(null=True, blank=True)
    # Whole hours: the usage records the rules read are hourly (the current hour included).
    window_hours = models.PositiveIntegerField(default=1)
    # *.share: fewer calls than this in the window never fire (1 call of 1 failing is not a trend);
    # rejections.spike: fewer rejections than this never fire.
    min_calls = models.PositiveIntegerField(default=20)
    # key.expiring / key.unused: N days.
    days = models.PositiveIntegerField(null=True, blank=True)
    renotify_minutes = models.PositiveIntegerField(
        default=1440, help_text="After firing, the same rule, key and level waits this long to fire again."
    )
    email_recipients = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    send_webhooks = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event} for {self.api_key_id or 'every key'} of {self.tenant_id}"


class AlertFiring(models.Model):
    """That a rule fired for one key, level and window: the unique constraint makes it fire once."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="firings")
    subject = models.CharField(max_length=60, help_text="The key id (or the audit event) it fired for.")
    level = models.CharField(max_length=20, blank=True)
    window = models.CharField(max_length=40, help_text="The window it fired in (a day, a window start).")
    fired_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "subject", "level", "window"], name="alert_fires_once")
        ]
        ordering = ["-fired_at"]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.subject} {self.level} {self.window}"


class WebhookEndpoint(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=_empty_list, blank=True, help_text="Empty: every event.")
    description = models.CharField(max_length=200, blank=True)
    secret_encrypted = models.TextField(editable=False)
    hint = models.CharField(max_length=12, editable=False)
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return event_type in WEBHOOK_ONLY_EVENTS or not self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # not sent yet, or failed and waiting for its next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # gave up: a day of retries, or the endpoint was disabled or deleted


class WebhookDelivery(models.Model):
    """One event for one endpoint, with every attempt and the receiver's answer to it."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=40, db_index=True)
    event_type = models.CharField(max_length=40)
    body = models.TextField(help_text="The JSON sent, exactly (it is what the signature covers).")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Each attempt: {"at", "status_code", "error", "response", "duration_ms"} (answers cut short).
    attempt_log = models.JSONField(default=_empty_list, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.event_id} to {self.endpoint_id}: {self.status}"
