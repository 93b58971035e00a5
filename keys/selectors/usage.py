"""Reads of usage records: lists, summaries, rejections by reason, charts and exports."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from keys.models import (
    ApiKey,
    Tenant,
    UsageRecord,
)


def usage_list(
    *, tenant: Tenant, api_key: ApiKey | None = None, since: datetime | None = None
) -> QuerySet[UsageRecord]:
    records = UsageRecord.objects.filter(tenant=tenant)
    if api_key is not None:
        records = records.filter(api_key=api_key)
    if since is not None:
        records = records.filter(hour__gte=since)
    return records


USAGE_PERIODS = {"hour": TruncHour, "day": TruncDay}


def usage_summary(
    *, tenant: Tenant, api_key: ApiKey, granularity: str, since: datetime, until: datetime
) -> list[dict]:
    """The key's requests in [since, until), per hour or day (UTC), by outcome and rejection code:
    [{"period", "outcome", "code", "count"}], oldest first. Rows exist once a proxy process flushed them
    (within a second)."""
    trunc = USAGE_PERIODS[granularity]
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "outcome", "code")
        .annotate(count=Sum("count"))
        .order_by("period", "outcome", "code")
    )
    return [
        {"period": row["period"], "outcome": row["outcome"], "code": row["code"], "count": row["count"]}
        for row in rows
    ]


def usage_rejections(
    *, tenant: Tenant, since: datetime, api_key: ApiKey | None = None, limit: int = 100
) -> list[dict]:
    """Rejected requests since `since` by reason: [{"key_id", "key_name", "code", "detail", "count"}],
    most frequent first. `detail` says what was refused (the origin, address, method…), "" if unknown."""
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(outcome="rejected")
        .values("api_key__key_id", "api_key__name", "code", "detail")
        .annotate(count=Sum("count"))
        .order_by("-count", "code", "detail")[:limit]
    )
    return [
        {
            "key_id": row["api_key__key_id"],
            "key_name": row["api_key__name"],
            "code": row["code"],
            "detail": row["detail"],
            "count": row["count"],
        }
        for row in rows
    ]


def usage_by_period(
    *, tenant: Tenant, granularity: str, since: datetime, until: datetime, api_key: ApiKey | None = None
) -> list[dict]:
    """The tenant's requests (or one key's) in [since, until), per hour or day (UTC), by outcome:
    [{"period", "outcome", "count"}], oldest first. A period without requests has no row."""
    trunc = USAGE_PERIODS[granularity]
    rows = (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "outcome")
        .annotate(count=Sum("count"))
        .order_by("period", "outcome")
    )
    return [{"period": row["period"], "outcome": row["outcome"], "count": row["count"]} for row in rows]


def usage_export(
    *, tenant: Tenant, granularity: str, since: datetime, until: datetime, api_key: ApiKey | None = None
) -> QuerySet[UsageRecord, dict[str, Any]]:
    """The tenant's requests (or one key's) in [since, until) as rows of {"period", "api_key__key_id",
    "api_key__name", "outcome", "code", "detail", "count"}: one per period (UTC hour or day), key,
    outcome, code and detail, oldest first. A query, so a long export can be read in chunks."""
    trunc = USAGE_PERIODS[granularity]
    return (
        usage_list(tenant=tenant, api_key=api_key, since=since)
        .filter(hour__lt=until)
        .annotate(period=trunc("hour", tzinfo=UTC))
        .values("period", "api_key__key_id", "api_key__name", "outcome", "code", "detail")
        .annotate(count=Sum("count"))
        .order_by("period", "api_key__key_id", "outcome", "code", "detail")
    )


def requests_today_by_key(*, tenant: Tenant, now: datetime | None = None) -> dict[str, int]:
    """{key_id: requests since 00:00 UTC today, all outcomes} for the tenant's keys that had any."""
    midnight = (now or timezone.now()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        usage_list(tenant=tenant, since=midnight)
        .exclude(outcome="would_reject")  # counted on top of the request's own outcome
        .values("api_key__key_id")
        .annotate(total=Sum("count"))
        .order_by("api_key__key_id")
    )
    return {row["api_key__key_id"]: row["total"] for row in rows}


def usage_would_reject(
    *, tenant: Tenant, api_key: ApiKey, since: datetime, until: datetime | None = None, limit: int = 100
) -> list[dict]:
    """What the key's report-mode checks would have refused since `since`: [{"check", "code", "detail",
    "count"}], most frequent first (rows exist once the roll-up wrote them)."""
    from keys.usage.store import WOULD_REJECT
    from keys.validators import REPORT_CHECK_OF_CODE

    records = usage_list(tenant=tenant, api_key=api_key, since=since)
    if until is not None:
        records = records.filter(hour__lt=until)
    rows = (
        records.filter(outcome=WOULD_REJECT)
        .values("code", "detail")
        .annotate(count=Sum("count"))
        .order_by("-count", "code", "detail")[:limit]
    )
    return [
        {
            "check": REPORT_CHECK_OF_CODE.get(row["code"], ""),
            "code": row["code"],
            "detail": row["detail"],
            "count": row["count"],
        }
        for row in rows
    ]


def usage_day_spent(*, key_id: str, day_start: datetime) -> int:
    """Requests of the key that spent its daily quota in the UTC day starting at `day_start`: those let
    past the limits (allowed or failed upstream) as recorded so far. The durable total the proxy's
    daily-quota counter is seeded from when Redis lost it."""
    total = UsageRecord.objects.filter(
        api_key__key_id=key_id,
        hour__gte=day_start,
        hour__lt=day_start + timedelta(days=1),
        outcome__in=("allowed", "upstream_error"),
    ).aggregate(total=Sum("count"))["total"]
    return int(total or 0)
