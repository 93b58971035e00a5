"""The domain: tenants and their members, upstreams, API keys, tokens, usage and the audit trail.

Models hold fields, constraints and properties of one row; the rules live in services/ and
selectors.py. No secret is stored in clear: secrets and tokens as SHA-256 hashes, upstream
credentials encrypted (crypto.encrypt).
"""

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from keys import validators
from keys.policy_changes import announce

slug_validator = RegexValidator(
    validators.SLUG.pattern,
    "Use 1 to 50 lower-case letters, digits and hyphens, not starting or ending with a hyphen.",
)


class PolicyQuerySet(models.QuerySet):
    """A bulk update announces the policies it changes, as a save does (keys/signals.py), so the
    proxy's caches also learn of writes that bypass save()."""

    def update(self, **kwargs: Any) -> int:
        changes = self.model.policy_changes(self)
        count = super().update(**kwargs)
        announce(**changes)
        return count

    def update_quietly(self, **kwargs: Any) -> int:
        """An update that cannot change any policy (a last-used time): nothing to announce."""
        return super().update(**kwargs)


class KeyState(models.TextChoices):
    """What a key is at a given moment; revoked wins over expired."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class ApiKeyQuerySet(PolicyQuerySet):
    def in_state(self, state: str, *, now: datetime) -> "ApiKeyQuerySet":
        """The keys in `state` at `now` (ApiKey.state_at's rule, in SQL)."""
        if state == KeyState.REVOKED:
            return self.filter(revoked_at__lte=now)
        live = self.filter(models.Q(revoked_at__isnull=True) | models.Q(revoked_at__gt=now))
        if state == KeyState.EXPIRED:
            return live.filter(expires_at__lte=now)
        return live.filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class Tenant(models.Model):
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True, help_text="A suspended tenant's keys answer 403.")
    leak_response = models.CharField(
        max_length=10,
        choices=[("revoke", "Revoke at once"), ("alert", "Only alert")],
        default="revoke",
        help_text="What a leak report (GitHub secret scanning) does to a secret or token of this tenant.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @staticmethod
    def policy_changes(queryset: models.QuerySet[Any]) -> dict[str, Any]:
        return {"key_ids": list(ApiKey.objects.filter(tenant__in=queryset).values_list("key_id", flat=True))}


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.DEVELOPER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]
        ordering = ["tenant", "user"]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class EmailConfirmation(models.Model):
    """Proof that the person holding an account reads the mail of `email`, and how it was given: the
    link mailed at sign-up, a completed password reset, or an accepted invitation.

    An account's e-mail counts as confirmed while it is still this address (case-insensitive): a changed
    address needs a new proof. No token is stored: the sign-up link is signed (services)."""

    class Method(models.TextChoices):
        LINK = "link", "Confirmation link"
        RESET = "reset", "Password reset"
        INVITATION = "invitation", "Accepted invitation"
        EXISTING = "existing", "Account older than confirmation"
        OPERATOR = "operator", "Set by an operator (the demo seed)"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_confirmation"
    )
    email = models.EmailField(max_length=254)
    method = models.CharField(max_length=20, choices=Method.choices)
    confirmed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-confirmed_at"]

    def __str__(self) -> str:
        return f"{self.email} ({self.method})"


class Invitation(models.Model):
    """An e-mailed link that makes whoever opens it (signed in, or signing up) a member with `role`.
    Only the token's hash is stored; the link works once, until it expires or is revoked."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=150)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.DEVELOPER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant} ({self.role})"

    @property
    def state(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class AuthType(models.TextChoices):
    NONE = "none", "None"
    BASIC = "basic", "HTTP Basic"
    BEARER = "bearer", "Bearer token"
    HEADER = "header", "Named header"
    QUERY = "query", "Query parameter"


class Upstream(models.Model):
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="upstreams",
        help_text="Empty: a global upstream, made by staff, usable by every tenant's keys.",
    )
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    # The stubs want validators that return None; Django ignores what a validator returns, and these
    # return the cleaned value for the services' use.
    base_url = models.CharField(
        max_length=2000,
        validators=[validators.clean_upstream_url],  # type: ignore[list-item]
    )
    websocket_url = models.CharField(
        "WebSocket URL",
        max_length=2000,
        blank=True,
        validators=[validators.clean_upstream_websocket_url],  # type: ignore[list-item]
        help_text="ws or wss. Empty: the base URL with ws:// or wss:// (for an http or https one).",
    )
    auth_type = models.CharField(max_length=10, choices=AuthType.choices, default=AuthType.NONE)
    auth_name = models.CharField(
        max_length=200,
        blank=True,
        help_text="Basic: the user; header: the header name; query: the parameter.",
    )
    auth_value_encrypted = models.TextField(blank=True, editable=False)
    timeout_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(600)]
    )
    is_active = models.BooleanField(default=True)
    allow_private_network = models.BooleanField(
        default=False, help_text="Allow loopback and private addresses. Only staff may set this."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @staticmethod
    def policy_changes(queryset: models.QuerySet[Any]) -> dict[str, Any]:
        key_ids = ApiKey.objects.filter(upstreams__in=queryset).values_list("key_id", flat=True)
        return {"key_ids": list(key_ids), "upstreams_changed": True}

    @property
    def has_credential(self) -> bool:
        return bool(self.auth_value_encrypted)


def _empty_list() -> list[str]:
    return []


class ApiKey(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    key_id = models.CharField("key id", max_length=40, unique=True, editable=False)
    name = models.CharField(max_length=200)
    upstreams = models.ManyToManyField(Upstream, related_name="api_keys", blank=True)
    secret_hash = models.CharField(max_length=64, editable=False)
    previous_secret_hash = models.CharField(max_length=64, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_required = models.BooleanField(
        default=False, help_text="Every request must carry the key's secret or an access token."
    )
    allowed_origins = models.JSONField(default=_empty_list, blank=True, validators=[validators.clean_origins])
    allowed_ips = models.JSONField(default=_empty_list, blank=True, validators=[validators.clean_networks])
    allowed_user_agents = models.JSONField(
        default=_empty_list, blank=True, validators=[validators.clean_user_agents]
    )
    allowed_http_methods = models.JSONField(
        default=_empty_list, blank=True, validators=[validators.clean_http_methods]
    )
    allowed_rpc_methods = models.JSONField(
        default=_empty_list, blank=True, validators=[validators.clean_rpc_methods]
    )
    rate_limit = models.CharField(
        max_length=20,
        null=True,
        blank=True,
        validators=[validators.clean_rate],  # type: ignore[list-item]  # as base_url's: the return is ignored
    )
    daily_quota = models.PositiveIntegerField(null=True, blank=True)
    # The checks (validators.REPORT_ONLY_CHECKS) that only report what they would refuse.
    report_only = models.JSONField(default=_empty_list, blank=True, validators=[validators.clean_report_only])
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The expiry whose `api_key.expired` audit event is written (keys/jobs.py: once per expiry time).
    expiry_recorded_for = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.key_id} ({self.name})"

    @staticmethod
    def policy_changes(queryset: models.QuerySet[Any]) -> dict[str, Any]:
        return {"key_ids": list(queryset.values_list("key_id", flat=True))}

    NORMALISERS = {
        "allowed_origins": validators.clean_origins,
        "allowed_ips": validators.clean_networks,
        "allowed_user_agents": validators.clean_user_agents,
        "allowed_http_methods": validators.clean_http_methods,
        "allowed_rpc_methods": validators.clean_rpc_methods,
        "rate_limit": validators.clean_rate,
        "report_only": validators.clean_report_only,
    }

    def clean(self) -> None:
        # Store allowlists normalised, so what the proxy compares is what the tenant sees.
        for field, normalise in self.NORMALISERS.items():
            try:
                setattr(self, field, normalise(getattr(self, field)))
            except ValidationError:
                pass  # clean_fields() has already reported it against the field

    def state_at(self, now: datetime) -> KeyState:
        """Active, expired or revoked (ApiKeyQuerySet.in_state is the same rule in SQL)."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return KeyState.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyState.EXPIRED
        return KeyState.ACTIVE

    @property
    def state(self) -> str:
        return self.state_at(timezone.now())


class AccessToken(models.Model):
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="access_tokens")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    allowed_origins = models.JSONField(default=_empty_list, blank=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"token for {self.api_key.key_id} until {self.expires_at:%Y-%m-%d %H:%M:%S}"

    @staticmethod
    def policy_changes(queryset: models.QuerySet[Any]) -> dict[str, Any]:
        return {"token_hashes": list(queryset.values_list("token_hash", flat=True))}

    def state_at(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "active"


class ManagementToken(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="management_tokens")
    name = models.CharField(max_length=200, default="default")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(
        max_length=12, editable=False, help_text="The last characters, to tell tokens apart."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (…{self.hint})"


class UsageRecord(models.Model):
    """Requests of one key in one hour, by outcome and rejection code (rolled up from the counters)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="usage_records")
    hour = models.DateTimeField()
    outcome = models.CharField(max_length=20)  # allowed, rejected, upstream_error
    code = models.CharField(max_length=40, blank=True)  # the error code of a rejection
    # What was refused, so a tenant can fix an allowlist: the origin, client address, user agent,
    # HTTP or JSON-RPC method of a rejection (bounded in length and in distinct values per minute).
    detail = models.CharField(max_length=200, blank=True)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "hour", "outcome", "code", "detail"], name="usage_unique_bucket_detail"
            )
        ]
        indexes = [models.Index(fields=["tenant", "hour"])]
        ordering = ["-hour"]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.hour:%Y-%m-%d %H}h {self.outcome} {self.code} {self.count}"


class KeySharingDay(models.Model):
    """One key's distinct client addresses, origins and user agents on one UTC day (approximate: Redis
    HyperLogLog), with the top values by requests; rolled up from the proxy's sketches (keys/sharing.py)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="sharing_days")
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="sharing_days")
    day = models.DateField()
    addresses = models.PositiveIntegerField(default=0)
    origins = models.PositiveIntegerField(default=0)
    user_agents = models.PositiveIntegerField(default=0)
    # {"addresses": [[value, requests], ...], "origins": [...], "user_agents": [...]}, most first.
    top = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "day"], name="sharing_unique_key_day")]
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.api_key_id} {self.day}: {self.addresses} addresses, {self.origins} origins"


class UsageRollup(models.Model):
    """A claim of usage counters (keys/usage/store.py) already added into UsageRecord.

    Written in the same transaction as the counts, under a unique name: the marker that makes the
    roll-up apply each claim exactly once, even when two roll-ups or a retry meet the same claim.
    """

    claim = models.CharField(max_length=200, unique=True)
    minute = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.claim


class AuditEvent(models.Model):
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(
        max_length=200, blank=True, help_text="Who, when no user acted: system, command."
    )
    action = models.CharField(max_length=60, db_index=True)
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    data = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.target_id}"


# Alert rules, webhook endpoints and their deliveries (a module of their own, registered with this app).
from keys.alert_models import AlertFiring, AlertRule, WebhookDelivery, WebhookEndpoint  # noqa: E402, F401
