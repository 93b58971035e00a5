"""The management API's JSON: shapes and types only. The rules (allowlist syntax, SSRF, TTL bounds,
narrowing) live in keys.services, whose ValidationErrors answer 400 with the same `fields` shape.

Write serializers are closed: a field the caller may not set (`id`, `tenant`, hashes, timestamps,
`revoked_at`, or a typo) is refused with 400 naming it, never silently dropped or applied.
"""

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from keys import selectors
from keys.errors import ERROR_STATUS
from keys.models import ApiKey, AuthType, KeyState, ManagementToken, Membership, Role, Upstream
from keys.services import KEY_FIELDS
from keys.validators import REPORT_ONLY_CHECKS

# PositiveIntegerField's range in every database Django supports.
MAX_INT = 2147483647


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not "900", 1.5, 900.0 or true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class ClosedSerializer(serializers.Serializer):
    """Refuses, by name, every field of the body that it does not accept."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            refused = sorted(str(name) for name in data if name not in writable)
            if refused:
                raise serializers.ValidationError({name: ["This field cannot be set."] for name in refused})
        return super().to_internal_value(data)


def _strings(max_length: int = 1000, **kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length, allow_blank=True), max_length=1000, **kwargs
    )


# --- Errors ----------------------------------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=sorted(ERROR_STATUS))
    message = serializers.CharField()
    request_id = serializers.CharField()
    # The contract's name. Serializer.fields is a property, but DRF's metaclass takes declared fields out
    # of the class body, so this does not replace it; mypy sees only the class attribute.
    fields = serializers.DictField(  # type: ignore[assignment]
        required=False, help_text="For invalid_request: the messages of each refused field."
    )


class ErrorSerializer(serializers.Serializer):
    """The contract's error body (DESIGN.md "Error body")."""

    error = ErrorDetailSerializer()


# --- Tenant ----------------------------------------------------------------------------------------


class TenantSerializer(serializers.Serializer):
    slug = serializers.CharField(source="tenant.slug")
    name = serializers.CharField(source="tenant.name")
    role = serializers.CharField(help_text="The caller's role; a management token acts as admin.")


# --- Keys ------------------------------------------------------------------------------------------


class KeySerializer(serializers.ModelSerializer):
    """DESIGN.md "Key fields"."""

    id = serializers.CharField(source="key_id", read_only=True)
    upstreams: "serializers.SlugRelatedField[Upstream]" = serializers.SlugRelatedField(
        slug_field="slug", many=True, read_only=True
    )

    allowed_origins = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_ips = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_user_agents = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_http_methods = serializers.ListField(child=serializers.CharField(), read_only=True)
    allowed_rpc_methods = serializers.ListField(child=serializers.CharField(), read_only=True)
    report_only = serializers.ListField(
        child=serializers.ChoiceField(choices=REPORT_ONLY_CHECKS),
        read_only=True,
        help_text="The checks in report mode (they count what they would refuse); empty: all enforce.",
    )

    class Meta:
        model = ApiKey
        # DESIGN.md's key JSON, in its order: the writable fields are the service's own list.
        fields = ["id", "name", "upstreams", *KEY_FIELDS[1:], "revoked_at", "created_at", "last_used_at"]
        read_only_fields = fields


class KeyWithSecretSerializer(KeySerializer):
    """A key as create and rotate answer it: with its secret, shown this once."""

    secret = serializers.SerializerMethodField()

    class Meta(KeySerializer.Meta):
        fields = [*KeySerializer.Meta.fields, "secret"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_secret(self, api_key: ApiKey) -> str:
        return self.context["secret"]


class KeyWriteSerializer(ClosedSerializer):
    """What a caller may set on a key; PATCH accepts any subset."""

    name = serializers.CharField(max_length=200)
    upstreams = serializers.ListField(
        child=serializers.CharField(max_length=50), max_length=1000, required=False, help_text="Slugs."
    )
    secret_required = serializers.BooleanField(required=False)
    allowed_origins = _strings(required=False, help_text="e.g. https://app.example.com, *.example.com")
    allowed_ips = _strings(required=False, help_text="IPs or CIDR networks, IPv4 or IPv6.")
    allowed_user_agents = _strings(required=False, help_text="* matches any run of characters.")
    allowed_http_methods = _strings(required=False)
    allowed_rpc_methods = _strings(required=False)
    rate_limit = serializers.CharField(
        max_length=20, allow_null=True, allow_blank=True, required=False, help_text="N/s, N/m, N/h or N/d."
    )
    daily_quota = StrictIntegerField(min_value=0, max_value=MAX_INT, allow_null=True, required=False)
    report_only = serializers.ListField(
        child=serializers.ChoiceField(choices=REPORT_ONLY_CHECKS),
        max_length=len(REPORT_ONLY_CHECKS),
        required=False,
        help_text="Checks that only report (X-Would-Reject) what they would refuse; the others enforce.",
    )
    expires_at = serializers.DateTimeField(allow_null=True, required=False)

    def validate_upstreams(self, slugs: list[str]) -> list[Upstream]:
        tenant = self.context["tenant"]
        found, unknown = [], []
        for slug in dict.fromkeys(slugs):
            try:
                found.append(selectors.upstream_get(tenant=tenant, slug=slug))
            except Upstream.DoesNotExist:
                unknown.append(f"Unknown upstream: {slug}.")
        if unknown:
            raise serializers.ValidationError(unknown)
        return found


class KeyFilterSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, max_length=200, help_text="Part of the name, any case.")
    state = serializers.ChoiceField(choices=KeyState.values, required=False)


class KeyRotateSerializer(ClosedSerializer):
    grace_seconds = StrictIntegerField(
        min_value=0,
        default=86400,
        help_text="Seconds the old secret keeps working (0: none); at most KEYS_ROTATION_MAX_GRACE.",
    )

    def validate_grace_seconds(self, value: int) -> int:
        if value > settings.KEYS_ROTATION_MAX_GRACE:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.KEYS_ROTATION_MAX_GRACE}."
            )
        return value


class UsageQuerySerializer(serializers.Serializer):
    granularity = serializers.ChoiceField(choices=["hour", "day"], default="day")
    since = serializers.DateTimeField(
        required=False, help_text="Default: 7 days (hour) or 30 days before until."
    )
    until = serializers.DateTimeField(required=False, help_text="Default: now. The window is [since, until).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until") or timezone.now()
        window = timedelta(days=7 if attrs["granularity"] == "hour" else 30)
        try:
            since = attrs.get("since") or until - window
        except OverflowError as exc:
            raise serializers.ValidationError({"until": ["This date is out of range."]}) from exc
        if since >= until:
            raise serializers.ValidationError({"since": ["since must come before until."]})
        if until - since > timedelta(days=366):
            raise serializers.ValidationError({"since": ["The window may span at most 366 days."]})
        return {**attrs, "since": since, "until": until}


class UsageRowSerializer(serializers.Serializer):
    period = serializers.DateTimeField(help_text="Start of the hour or day (UTC).")
    outcome = serializers.CharField(
        help_text="allowed, rejected, upstream_error, or would_reject (a report-mode check's would-be "
        "refusal, counted on top of the request's own outcome)."
    )
    code = serializers.CharField(help_text="The error code of a rejection; empty otherwise.")
    count = serializers.IntegerField()


class WouldRejectSerializer(serializers.Serializer):
    check = serializers.CharField(help_text="The report-mode check, as named in report_only.")
    code = serializers.CharField(help_text="The error code it would have answered.")
    detail = serializers.CharField(help_text="What it would have refused (origin, address...); may be empty.")
    count = serializers.IntegerField()


class SharingDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    addresses = serializers.IntegerField(help_text="Distinct client addresses (approximate).")
    origins = serializers.IntegerField(help_text="Distinct origins (approximate).")
    user_agents = serializers.IntegerField(help_text="Distinct user agents (approximate).")
    top = serializers.DictField(
        child=serializers.ListField(child=serializers.ListField()),
        help_text='Top values by requests: {"addresses": [[value, requests], ...], "origins": ..., '
        '"user_agents": ...}.',
    )
    flagged = serializers.ListField(
        child=serializers.CharField(), help_text="addresses_jump, origins_jump: above the key's baseline."
    )


class SharingSerializer(serializers.Serializer):
    days = SharingDaySerializer(many=True, help_text="The 30 days up to `until`, oldest first.")
    flags = serializers.ListField(
        child=serializers.CharField(),
        help_text="addresses_jump, origins_jump, origin_outside_allowlist (in report mode) over those days.",
    )


class UsageSerializer(serializers.Serializer):
    key = serializers.CharField()
    granularity = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    results = UsageRowSerializer(many=True)
    would_reject = WouldRejectSerializer(
        many=True, help_text="What the key's report-mode checks would have refused in [since, until)."
    )
    sharing = SharingSerializer(help_text="Key-sharing signals: distinct callers per day, and flags.")


# --- Upstreams -------------------------------------------------------------------------------------


class UpstreamAuthSerializer(ClosedSerializer):
    type = serializers.ChoiceField(source="auth_type", choices=AuthType.values)
    name = serializers.CharField(
        source="auth_name",
        max_length=200,
        allow_blank=True,
        required=False,
        help_text="basic: the user; header: the header; query: the parameter.",
    )
    value = serializers.CharField(
        source="auth_value",
        write_only=True,
        max_length=4096,
        allow_blank=True,
        required=False,
        trim_whitespace=False,
        help_text="Write-only: never shown again. Omit it on update to keep the stored one.",
    )


class UpstreamSerializer(ClosedSerializer):
    """DESIGN.md's upstream fields, and whether it is global (made by staff; read-only here)."""

    slug = serializers.CharField(max_length=50)
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    base_url = serializers.CharField(max_length=2000)
    websocket_url = serializers.CharField(
        max_length=2000,
        allow_blank=True,
        required=False,
        help_text="ws or wss; empty: the base URL with ws:// or wss://.",
    )
    auth = UpstreamAuthSerializer(source="*", required=False)
    timeout_seconds = StrictIntegerField(min_value=1, max_value=600, required=False)
    is_active = serializers.BooleanField(required=False)
    is_global = serializers.SerializerMethodField()

    def get_is_global(self, upstream: Upstream) -> bool:
        return upstream.tenant_id is None


class UpstreamUpdateSerializer(UpstreamSerializer):
    """On update the slug stays: keys and callers name upstreams by it."""

    slug = serializers.CharField(read_only=True)


# --- Management tokens -----------------------------------------------------------------------------


class ManagementTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ManagementToken
        fields = ["id", "name", "hint", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["id", "hint", "created_at", "last_used_at", "revoked_at"]


class ManagementTokenCreateSerializer(ClosedSerializer):
    name = serializers.CharField(max_length=200, default="default")


class ManagementTokenCreatedSerializer(ManagementTokenSerializer):
    token = serializers.SerializerMethodField()

    class Meta(ManagementTokenSerializer.Meta):
        fields = [*ManagementTokenSerializer.Meta.fields, "token"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_token(self, token: ManagementToken) -> str:
        return self.context["token"]


# --- Token exchange --------------------------------------------------------------------------------


class AccessTokenRequestSerializer(ClosedSerializer):
    ttl = StrictIntegerField(
        required=False, help_text="Seconds, from 1 to KEYS_TOKEN_MAX_TTL (86400); default 900."
    )
    allowed_origins = serializers.ListField(
        child=serializers.CharField(max_length=1000),
        max_length=1000,
        required=False,
        help_text="Origins the token is bound to; each must lie within the key's own allowlist.",
    )


class AccessTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    token_type = serializers.ChoiceField(choices=["Bearer"])
    key = serializers.CharField()
    expires_in = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


# --- Members ---------------------------------------------------------------------------------------


class MemberSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "role", "created_at"]
        read_only_fields = fields


class MemberCreateSerializer(ClosedSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.values)


class MemberUpdateSerializer(ClosedSerializer):
    role = serializers.ChoiceField(choices=Role.values)
