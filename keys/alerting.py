"""The alerts job: evaluate every active alert rule from the usage records and the audit trail (Celery
beat, every minute, after the usage roll-up), and fire what crossed (services.alerts.alert_fire keeps
each firing to once per key, level and window, then quiet for the rule's re-notify delay).

Usage records are hourly, so windows are whole hours ending with the current one; counts arrive with
the roll-up (within about a minute of the calls).
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.db.models import Q, Sum
from django.utils import timezone

from keys.alert_models import AlertEvent, AlertRule
from keys.models import ApiKey, AuditEvent, KeyState, UsageRecord
from keys.services.alerts import alert_fire, alert_signal_key_sharing
from keys.sharing import sharing_flags
from keys.usage.store import ALLOWED, REJECTED, UPSTREAM_ERROR

# How far back the revoked / rotated rules look in the audit trail (a beat that was down catches up).
AUDIT_LOOKBACK = timedelta(days=1)


def _hour(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _keys(rule: AlertRule, now: datetime) -> list[ApiKey]:
    keys = ApiKey.objects.filter(tenant=rule.tenant).in_state(KeyState.ACTIVE, now=now)
    if rule.api_key_id is not None:
        keys = keys.filter(pk=rule.api_key_id)
    return list(keys)


def _counts(rule: AlertRule, since: datetime, until: datetime | None = None) -> dict[int, dict[str, int]]:
    """{api key pk: {"total", "allowed", "rejected", "upstream_error", <rejection code>...}} in the window."""
    rows = UsageRecord.objects.filter(tenant=rule.tenant, hour__gte=since)
    if until is not None:
        rows = rows.filter(hour__lt=until)
    if rule.api_key_id is not None:
        rows = rows.filter(api_key_id=rule.api_key_id)
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows.values("api_key_id", "outcome", "code").annotate(n=Sum("count")):
        bucket = counts[row["api_key_id"]]
        bucket["total"] += row["n"]
        bucket[row["outcome"]] += row["n"]
        if row["code"]:
            bucket[row["code"]] += row["n"]
    return counts


def _quota(rule: AlertRule, now: datetime) -> int:
    day = _hour(now).replace(hour=0)
    counts = _counts(rule, day)
    fired = 0
    for key in _keys(rule, now):
        if not key.daily_quota:
            continue
        bucket = counts.get(key.pk, {})
        # The quota spends on calls that passed the checks; a quota refusal means it is all spent.
        used = bucket.get(ALLOWED, 0) + bucket.get(UPSTREAM_ERROR, 0)
        percent = 100 if bucket.get("quota_exceeded") else used * 100 // key.daily_quota
        reached = [level for level in rule.levels if percent >= level]
        if not reached:
            continue
        top = max(reached)
        fired += alert_fire(
            rule=rule,
            subject=key.key_id,
            level=str(top),
            also_levels=[str(level) for level in reached if level != top],
            window=day.date().isoformat(),
            data={
                "key": key.key_id,
                "key_name": key.name,
                "level": top,
                "used": used,
                "daily_quota": key.daily_quota,
            },
            now=now,
        )
    return fired


def _share(rule: AlertRule, now: datetime, *, part: str) -> int:
    start = _hour(now) - timedelta(hours=rule.window_hours - 1)
    counts = _counts(rule, start)
    fired = 0
    for key in _keys(rule, now):
        bucket = counts.get(key.pk, {})
        total, hits = bucket.get("total", 0), bucket.get(part, 0)
        if total < rule.min_calls or hits * 100 < (rule.threshold or 0) * total:
            continue
        fired += alert_fire(
            rule=rule,
            subject=key.key_id,
            window=start.isoformat(),
            data={
                "key": key.key_id,
                "key_name": key.name,
                "calls": total,
                part: hits,
                "share_percent": round(hits * 100 / total, 1),
                "threshold_percent": rule.threshold,
                "window_start": start.isoformat(),
            },
            now=now,
        )
    return fired


def _spike(rule: AlertRule, now: datetime) -> int:
    start = _hour(now) - timedelta(hours=rule.window_hours - 1)
    current = _counts(rule, start)
    before = _counts(rule, start - timedelta(hours=24), start)
    fired = 0
    for key in _keys(rule, now):
        rejected = current.get(key.pk, {}).get(REJECTED, 0)
        baseline = before.get(key.pk, {}).get(REJECTED, 0) / 24 * rule.window_hours
        if rejected < rule.min_calls or rejected * 100 < (rule.threshold or 0) * baseline:
            continue
        fired += alert_fire(
            rule=rule,
            subject=key.key_id,
            window=start.isoformat(),
            data={
                "key": key.key_id,
                "key_name": key.name,
                "rejected": rejected,
                "baseline": round(baseline, 1),
                "window_start": start.isoformat(),
            },
            now=now,
        )
    return fired


def _expiring(rule: AlertRule, now: datetime) -> int:
    fired = 0
    for key in _keys(rule, now):
        if key.expires_at is None or key.expires_at > now + timedelta(days=rule.days or 0):
            continue
        fired += alert_fire(
            rule=rule,
            subject=key.key_id,
            window=key.expires_at.isoformat(),  # once per expiry: a key given a new expiry tells again
            data={"key": key.key_id, "key_name": key.name, "expires_at": key.expires_at.isoformat()},
            now=now,
        )
    return fired


def _unused(rule: AlertRule, now: datetime) -> int:
    fired = 0
    for key in _keys(rule, now):
        last = key.last_used_at or key.created_at
        if last > now - timedelta(days=rule.days or 0):
            continue
        fired += alert_fire(
            rule=rule,
            subject=key.key_id,
            window=last.isoformat(),  # once per idle stretch: a key used again and idle again tells again
            data={
                "key": key.key_id,
                "key_name": key.name,
                "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
            },
            now=now,
        )
    return fired


def _audited(rule: AlertRule, now: datetime, *, action: str) -> int:
    since = max(rule.created_at, now - AUDIT_LOOKBACK)
    events = AuditEvent.objects.filter(tenant=rule.tenant, action=action, created_at__gte=since)
    if rule.api_key_id is not None and rule.api_key is not None:
        events = events.filter(target_type="ApiKey", target_id=rule.api_key.key_id)
    fired = 0
    for event in events.order_by("created_at")[:1000]:
        fired += alert_fire(
            rule=rule,
            subject=event.target_id,
            level=str(event.pk),  # every revocation or rotation is its own alert
            window=str(event.pk),
            data={
                "key": event.target_id,
                "by": event.actor_label,
                "at": event.created_at.isoformat(),
                **{k: v for k, v in event.data.items() if k in ("grace_seconds", "url", "reason")},
            },
            now=now,
        )
    return fired


def _sharing(tenant_id: int, now: datetime) -> int:
    """The tenant's keys whose signals say "shared" today (keys/sharing.py: a jump of distinct addresses
    or origins above the key's own baseline, or an unlisted origin while origins report) go to the
    signal's hook, which fires every sharing rule covering the key."""
    fired = 0
    for key in ApiKey.objects.filter(tenant_id=tenant_id).in_state(KeyState.ACTIVE, now=now):
        flags = sharing_flags(api_key=key, days=1, today=now.astimezone(UTC).date())
        if flags:
            fired += alert_signal_key_sharing(
                api_key=key, data={"key_name": key.name, "reasons": ", ".join(sorted(flags))}, now=now
            )
    return fired


def alerts_evaluate(*, now: datetime | None = None) -> int:
    """Evaluate every active rule; returns how many alerts fired. Safe to run twice or concurrently."""
    now = now or timezone.now()
    fired = 0
    rules = AlertRule.objects.filter(is_active=True, tenant__is_active=True).select_related(
        "tenant", "api_key"
    )
    for tenant_id in set(rules.filter(event=AlertEvent.KEY_SHARING).values_list("tenant_id", flat=True)):
        fired += _sharing(tenant_id, now)
    for rule in rules.filter(~Q(event=AlertEvent.KEY_SHARING)):
        if rule.event == AlertEvent.QUOTA_THRESHOLD:
            fired += _quota(rule, now)
        elif rule.event == AlertEvent.RATE_LIMITED_SHARE:
            fired += _share(rule, now, part="rate_limited")
        elif rule.event == AlertEvent.UPSTREAM_ERRORS_SHARE:
            fired += _share(rule, now, part=UPSTREAM_ERROR)
        elif rule.event == AlertEvent.REJECTIONS_SPIKE:
            fired += _spike(rule, now)
        elif rule.event == AlertEvent.KEY_EXPIRING:
            fired += _expiring(rule, now)
        elif rule.event == AlertEvent.KEY_UNUSED:
            fired += _unused(rule, now)
        elif rule.event == AlertEvent.KEY_REVOKED:
            fired += _audited(rule, now, action="api_key.revoked")
        elif rule.event == AlertEvent.KEY_ROTATED:
            fired += _audited(rule, now, action="api_key.rotated")
    return fired
