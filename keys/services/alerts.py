"""Alert rules (create, delete) and their firing: once per rule, key, level and window, then quiet for
the rule's re-notify delay; delivered by e-mail to the rule's chosen members and as a webhook event.

What makes a rule fire is evaluated by the alerts job (keys/alerting.py), from usage records and the
audit trail, never on the proxy's hot path.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from keys.alert_models import AlertEvent, AlertFiring, AlertRule
from keys.models import ApiKey, Membership, Tenant
from keys.services.audit import Actor, actor_user, audit_record
from keys.services.tenants import tenant_check_limit
from keys.services.webhooks import event_emit

QUOTA_LEVELS = (50, 80, 100)
# Per event: the fields that rule needs, and their defaults when not given.
RULE_DEFAULTS: dict[str, dict[str, object]] = {
    AlertEvent.QUOTA_THRESHOLD: {"levels": [80, 100]},
    AlertEvent.RATE_LIMITED_SHARE: {"threshold": 10, "window_hours": 1, "min_calls": 20},
    AlertEvent.UPSTREAM_ERRORS_SHARE: {"threshold": 5, "window_hours": 1, "min_calls": 20},
    AlertEvent.REJECTIONS_SPIKE: {"threshold": 300, "window_hours": 1, "min_calls": 20},
    AlertEvent.KEY_EXPIRING: {"days": 7},
    AlertEvent.KEY_UNUSED: {"days": 30},
    AlertEvent.KEY_SHARING: {},
    AlertEvent.KEY_REVOKED: {},
    AlertEvent.KEY_ROTATED: {},
}
RULE_FIELDS = (
    "levels",
    "threshold",
    "window_hours",
    "min_calls",
    "days",
    "renotify_minutes",
    "send_webhooks",
)


def _positive(value: object, field: str, *, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValidationError({field: [f"A whole number from 1 to {most}."]})
    return value


@transaction.atomic
def alert_rule_create(
    *,
    tenant: Tenant,
    event: str,
    api_key: ApiKey | None = None,
    recipients: Iterable[User] = (),
    actor: Actor = None,
    ip_address: str | None = None,
    **fields: object,
) -> AlertRule:
    """A rule for one key or (api_key None) every key of the tenant. Fields a rule of this event does not
    use are refused; missing ones take RULE_DEFAULTS. Recipients must be members of the tenant."""
    if event not in RULE_DEFAULTS:
        raise ValidationError({"event": [f"Choose one of: {', '.join(RULE_DEFAULTS)}."]})
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise ValidationError({field: ["This field cannot be set."] for field in sorted(unknown)})
    allowed = set(RULE_DEFAULTS[event]) | {"renotify_minutes", "send_webhooks"}
    unused = {f for f, v in fields.items() if v is not None} - allowed
    if unused:
        raise ValidationError(
            {field: [f"A {event} rule does not use this field."] for field in sorted(unused)}
        )
    if api_key is not None and api_key.tenant_id != tenant.pk:
        raise ValidationError({"key": ["Unknown key."]})
    tenant_check_limit(
        tenant=tenant,
        rows=AlertRule.objects.filter(tenant=tenant),
        setting="KEYS_MAX_ALERT_RULES_PER_TENANT",
        what="alert rules",
    )
    values = {**RULE_DEFAULTS[event], **{f: v for f, v in fields.items() if v is not None}}
    if "levels" in values:
        levels = values["levels"]
        if not isinstance(levels, list) or not levels or any(level not in QUOTA_LEVELS for level in levels):
            raise ValidationError({"levels": ["Choose one or more of 50, 80 and 100."]})
        values["levels"] = sorted(set(levels))
    for field, most in (
        ("threshold", 100_000),
        ("window_hours", 24),
        ("min_calls", 10_000_000),
        ("days", 365),
    ):
        if field in values:
            values[field] = _positive(values[field], field, most=most)
    if (
        event in (AlertEvent.RATE_LIMITED_SHARE, AlertEvent.UPSTREAM_ERRORS_SHARE)
        and int(values["threshold"]) > 100  # type: ignore[call-overload]  # _positive made it an int
    ):
        raise ValidationError({"threshold": ["A share in percent, from 1 to 100."]})
    if "renotify_minutes" in values:
        values["renotify_minutes"] = _positive(values["renotify_minutes"], "renotify_minutes", most=43_200)
    if not isinstance(values.get("send_webhooks", True), bool):
        raise ValidationError({"send_webhooks": ["true or false."]})
    recipients = list(recipients)
    members = set(Membership.objects.filter(tenant=tenant).values_list("user_id", flat=True))
    if any(user.pk not in members for user in recipients):
        raise ValidationError({"recipients": ["Every recipient must be a member of the organisation."]})
    rule = AlertRule.objects.create(
        tenant=tenant, event=event, api_key=api_key, created_by=actor_user(actor), **values
    )
    rule.email_recipients.set(recipients)
    audit_record(
        action="alert_rule.created",
        tenant=tenant,
        actor=actor,
        target=rule,
        ip_address=ip_address,
        data={"event": event, "key": api_key.key_id if api_key else None},
    )
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, actor: Actor = None, ip_address: str | None = None) -> None:
    audit_record(
        action="alert_rule.deleted",
        tenant=rule.tenant,
        actor=actor,
        target=rule,
        ip_address=ip_address,
        data={"event": rule.event},
    )
    rule.delete()


def alert_fire(
    *,
    rule: AlertRule,
    subject: str,
    window: str,
    data: Mapping[str, object],
    level: str = "",
    also_levels: Iterable[str] = (),
    now: datetime | None = None,
) -> bool:
    """Fire `rule` for `subject` (a key id) at `level` in `window`, unless it already fired there or
    within its re-notify delay. `also_levels` are marked fired without a message of their own (a quota
    that jumps past 50 % and 80 % at once sends one alert, for 80 %). Returns whether it fired."""
    now = now or timezone.now()
    quiet_since = now - timedelta(minutes=rule.renotify_minutes)
    if AlertFiring.objects.filter(rule=rule, subject=subject, level=level, fired_at__gt=quiet_since).exists():
        return False
    try:
        with transaction.atomic():
            AlertFiring.objects.create(rule=rule, subject=subject, level=level, window=window, fired_at=now)
            for other in also_levels:
                AlertFiring.objects.get_or_create(
                    rule=rule, subject=subject, level=other, window=window, defaults={"fired_at": now}
                )
            payload = {"rule": rule.pk, **data}
            if rule.send_webhooks:
                event_emit(tenant=rule.tenant, event_type=rule.event, data=payload, now=now)
            recipients = sorted(
                {
                    user.email
                    for user in rule.email_recipients.filter(memberships__tenant=rule.tenant)
                    if user.email
                }
            )
            if recipients:
                subject_line, body = alert_message(rule=rule, data=data)
                transaction.on_commit(
                    lambda: send_mail(
                        subject=subject_line,
                        message=body,
                        from_email=None,
                        recipient_list=recipients,
                        fail_silently=True,
                    )
                )
    except IntegrityError:
        return False  # fired in this window already (another evaluation won the race)
    return True


def alert_message(*, rule: AlertRule, data: Mapping[str, object]) -> tuple[str, str]:
    """The e-mail of a firing: a subject naming the tenant and what happened, and the facts."""
    what = AlertEvent(rule.event).label
    key = data.get("key") or ""
    subject = f"[{rule.tenant.slug}] {what}" + (f": {key}" if key else "")
    lines = [f"{what}."] + [f"{name}: {value}" for name, value in data.items()]
    lines.append(
        "\nAlert rules are in the portal under Alerts; this rule waits "
        f"{rule.renotify_minutes} minutes before telling you again."
    )
    return subject[:200], "\n".join(lines) + "\n"


def alert_signal_key_sharing(
    *, api_key: ApiKey, data: Mapping[str, object], now: datetime | None = None
) -> int:
    """The hook for the key-sharing signal (built elsewhere): fire the tenant's `key.sharing_suspected`
    rules that cover this key. Call it from a job, never from the proxy's hot path. Returns how many fired."""
    now = now or timezone.now()
    rules = AlertRule.objects.filter(
        tenant=api_key.tenant, event=AlertEvent.KEY_SHARING, is_active=True
    ).filter(Q(api_key__isnull=True) | Q(api_key=api_key))
    window = now.strftime("%Y-%m-%dT%H")
    return sum(
        alert_fire(
            rule=rule, subject=api_key.key_id, window=window, data={"key": api_key.key_id, **data}, now=now
        )
        for rule in rules
    )
