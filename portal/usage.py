"""Usage of the current tenant and of each key: charts, rejections by reason, CSV export."""

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from keys import crypto, selectors
from keys.models import ApiKey, Role, UsageRecord
from keys.usage import store as usage_store
from portal.common import TenantRequest, can, or_404, page, tenant_view


@dataclass(frozen=True)
class Span:
    """A range the page offers: how many periods of one hour or one day, ending with the current one."""

    name: str
    label: str
    granularity: str
    periods: int
    step: timedelta
    label_every: int  # an axis label on every n-th bar, counted back from the current period
    period_format: str  # Django date formats: a period in the table, and under its bar
    axis_format: str


SPANS = {
    "24h": Span("24h", "Last 24 hours", "hour", 24, timedelta(hours=1), 6, "Y-m-d H:i", "H:i"),
    "30d": Span("30d", "Last 30 days", "day", 30, timedelta(days=1), 5, "Y-m-d", "M j"),
}
DEFAULT_SPAN = "24h"

# The outcomes stacked bottom-up, with colours of at least 3:1 against the white page (WCAG 1.4.11);
# a white gap separates the segments, and the legend and the table name them in words.
OUTCOMES = (
    ("allowed", "Allowed", "#0b5cad"),
    ("rejected", "Rejected", "#d55e00"),
    ("upstream_error", "Upstream errors", "#3d1d5c"),
)

# How a tenant can stop each kind of rejection; True where the fix is in the key's settings.
FIX_HINTS = {
    "origin_not_allowed": ("Add the origin to the key's allowed origins.", True),
    "origin_required": (
        "Calls without an Origin (servers, scripts) must send the key's secret or an access token.",
        False,
    ),
    "ip_not_allowed": ("Add the address (or its network) to the key's allowed IPs.", True),
    "user_agent_not_allowed": (
        "Add a pattern matching the user agent to the key's allowed user agents.",
        True,
    ),
    "http_method_not_allowed": ("Add the method to the key's allowed HTTP methods.", True),
    "rpc_method_not_allowed": ("Add the method to the key's allowed JSON-RPC methods.", True),
    "invalid_rpc_request": ("The key allows listed JSON-RPC methods only: the body must be JSON-RPC.", False),
    "upstream_not_allowed": ("Add the upstream to the key's upstreams.", True),
    "secret_required": (
        "Send the secret (Basic auth) or an access token, or stop requiring the secret on the key.",
        True,
    ),
    "invalid_secret": ("The client sends a wrong or old secret: give it the current one.", False),
    "invalid_token": ("The client sends an unknown or revoked access token: exchange a new one.", False),
    "token_expired": ("The client's access token has expired: exchange a new one before it does.", False),
    "rate_limited": ("Raise the key's rate limit, or have the client slow down.", True),
    "quota_exceeded": ("Raise the key's daily quota, or wait for the next UTC day.", True),
    "key_expired": ("Set a later expiry on the key, or give the client a new key.", True),
    "key_revoked": ("The key is revoked: give the client a new key.", False),
    "tenant_suspended": ("Your organisation is suspended: contact support.", False),
    "payload_too_large": ("The request body is over the proxy's size limit.", False),
    "invalid_path": ("The path may not leave the upstream's base path.", False),
}

# A spreadsheet runs a cell starting with one of these as a formula; `detail` holds what a client sent.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
REJECTIONS_SHOWN = 100
CSV_HEADER = ("period", "key_id", "key_name", "outcome", "code", "detail", "count")

# The chart's drawing, in the SVG's own units (it scales to the page's width).
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 28
TICKS = 4


def _span(request: HttpRequest) -> Span:
    # An unknown range is not an error worth a page: show the default one.
    return SPANS.get(request.GET.get("range", ""), SPANS[DEFAULT_SPAN])


def _key_or_none(request: TenantRequest) -> ApiKey | None:
    key_id = request.GET.get("key", "")
    if not key_id:
        return None
    # A malformed id never reaches the database (PostgreSQL refuses NUL characters, for one).
    if not crypto.well_formed(key_id, crypto.KEY_ID_PREFIX):
        raise Http404("No such key.")
    return or_404(selectors.api_key_get, tenant=request.tenant, key_id=key_id)


def _window(span: Span, now: datetime) -> tuple[list[datetime], datetime]:
    """The span's periods, oldest first, the last one holding `now`; and the end of that last one."""
    now = now.astimezone(UTC)
    last = now.replace(minute=0, second=0, microsecond=0)
    if span.granularity == "day":
        last = last.replace(hour=0)
    first = last - (span.periods - 1) * span.step
    return [first + n * span.step for n in range(span.periods)], last + span.step


def _axis_max(value: int) -> int:
    """A round top for the axis, at or above `value`, that TICKS equal whole steps divide."""
    magnitude = 1
    while True:
        for factor in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            step = factor * magnitude
            if step == int(step) and step * TICKS >= value:
                return int(step) * TICKS
        magnitude *= 10


def _bar(
    index: int, period: datetime, values: list[int], top: int, slot: float, labelled: bool
) -> dict[str, Any]:
    """One period's bar: its numbers, and its segments stacked from the baseline, in SVG units."""
    plot_height = HEIGHT - TOP - BOTTOM
    base: float = TOP + plot_height
    segments = []
    for (name, _, colour), value in zip(OUTCOMES, values, strict=True):
        height = plot_height * value / top
        if value:
            segments.append(
                {"name": name, "colour": colour, "y": f"{base - height:.2f}", "height": f"{height:.2f}"}
            )
        base -= height
    left = LEFT + index * slot
    return {
        "period": period,
        "values": [
            {"name": name, "label": label, "value": v}
            for (name, label, _), v in zip(OUTCOMES, values, strict=True)
        ],
        "total": sum(values),
        "x": f"{left:.2f}",
        "bar_x": f"{left + slot * 0.15:.2f}",
        "centre": f"{left + slot / 2:.2f}",
        "labelled": labelled,
        "segments": segments,
    }


def _chart(span: Span, periods: list[datetime], counts: dict[tuple[datetime, str], int]) -> dict[str, Any]:
    """Everything the template draws: one bar per period (zeros too), the axis, the totals by outcome."""
    values = [[counts.get((period, name), 0) for name, _, _ in OUTCOMES] for period in periods]
    top = _axis_max(max(sum(row) for row in values))
    slot = (WIDTH - LEFT - RIGHT) / len(periods)
    last = len(periods) - 1
    bars = [
        _bar(n, period, row, top, slot, labelled=(last - n) % span.label_every == 0)
        for n, (period, row) in enumerate(zip(periods, values, strict=True))
    ]
    totals = {name: sum(row[n] for row in values) for n, (name, _, _) in enumerate(OUTCOMES)}
    plot_height = HEIGHT - TOP - BOTTOM
    return {
        "bars": bars,
        "ticks": [
            {"value": top * n // TICKS, "y": f"{TOP + plot_height - plot_height * n / TICKS:.2f}"}
            for n in range(TICKS + 1)
        ],
        "totals": totals,
        "total": sum(totals.values()),
        "outcomes": [
            {"name": name, "label": label, "colour": colour, "total": totals[name]}
            for name, label, colour in OUTCOMES
        ],
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "tick_x": LEFT - 6,
        "right": WIDTH - RIGHT,
        "plot_top": TOP,
        "plot_height": plot_height,
        "baseline": TOP + plot_height,
        "label_y": TOP + plot_height + 18,
        "slot": f"{slot:.2f}",
        "bar_width": f"{slot * 0.7:.2f}",
    }


def _query(span: Span, api_key: ApiKey | None) -> str:
    return urlencode({"range": span.name, **({"key": api_key.key_id} if api_key else {})})


@require_GET
@tenant_view(Role.VIEWER)
def usage(request: TenantRequest) -> HttpResponse:
    span, api_key = _span(request), _key_or_none(request)
    periods, until = _window(span, timezone.now())
    since = periods[0]
    rows = selectors.usage_by_period(
        tenant=request.tenant, granularity=span.granularity, since=since, until=until, api_key=api_key
    )
    counts = {(row["period"], row["outcome"]): row["count"] for row in rows}
    can_edit = can(request, Role.DEVELOPER)
    rejections = selectors.usage_rejections(
        tenant=request.tenant, since=since, api_key=api_key, limit=REJECTIONS_SHOWN
    )
    for row in rejections:
        hint, in_settings = FIX_HINTS.get(row["code"], ("", False))
        row["hint"] = hint
        row["fix_url"] = reverse("portal:key_edit", args=[row["key_id"]]) if in_settings and can_edit else ""
        # Past a bound of distinct values a minute the proxy stops telling them apart (usage_store).
        row["many_values"] = row["detail"] == usage_store.OTHER_DETAIL
    context = {
        "span": span,
        "spans": SPANS.values(),
        "key": api_key,
        "keys": selectors.api_key_list(tenant=request.tenant),
        "since": since,
        "chart": _chart(span, periods, counts),
        "rejections": rejections,
        "rejections_limited": len(rejections) >= REJECTIONS_SHOWN,
        "csv_url": f"{reverse('portal:usage_csv')}?{_query(span, api_key)}",
    }
    return page(request, "portal/usage.html", context)


def csv_safe(value: str) -> str:
    """The value as a spreadsheet shows it as text, never runs it as a formula."""
    return f"'{value}" if value.startswith(FORMULA_START) else value


class _Echo:
    def write(self, value: str) -> str:
        return value


# Rows are dicts (selectors.usage_export is a .values() query), whatever its annotation says.
def _csv_lines(span: Span, rows: QuerySet[UsageRecord, Any]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    period_format = "%Y-%m-%dT%H:%M:%SZ" if span.granularity == "hour" else "%Y-%m-%d"
    for row in rows.iterator(chunk_size=2000):
        yield writer.writerow(
            (
                row["period"].astimezone(UTC).strftime(period_format),
                csv_safe(row["api_key__key_id"]),
                csv_safe(row["api_key__name"]),
                csv_safe(row["outcome"]),
                csv_safe(row["code"]),
                csv_safe(row["detail"]),
                row["count"],
            )
        )


@require_GET
@tenant_view(Role.VIEWER)
def usage_csv(request: TenantRequest) -> StreamingHttpResponse:
    span, api_key = _span(request), _key_or_none(request)
    periods, until = _window(span, timezone.now())
    rows = selectors.usage_export(
        tenant=request.tenant, granularity=span.granularity, since=periods[0], until=until, api_key=api_key
    )
    response = StreamingHttpResponse(_csv_lines(span, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f"attachment; filename=usage-{request.tenant.slug}-{span.name}.csv"
    return response


urlpatterns = [
    path("usage", usage, name="usage"),
    path("usage.csv", usage_csv, name="usage_csv"),
]
