"""The portal's usage page (portal/usage.py): the chart by outcome, rejections by reason, CSV export."""

import csv
import io
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest
from django.urls import reverse

from keys import crypto, selectors, services
from keys.models import Role, UsageRecord
from keys.usage import store as usage_store
from portal import usage as usage_view

# Mid-hour, so "the current hour" and "today" are unambiguous; the page reads this clock only.
NOW = datetime(2026, 3, 15, 14, 25, 7, tzinfo=UTC)
THIS_HOUR = NOW.replace(minute=0, second=0)
TODAY = THIS_HOUR.replace(hour=0)
OUTCOMES = ("allowed", "rejected", "upstream_error")


pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


@pytest.fixture(autouse=True)
def _page_clock(monkeypatch):
    monkeypatch.setattr("portal.usage.timezone", SimpleNamespace(now=lambda: NOW))


@pytest.fixture
def second_key(tenant, loopback_upstream):
    return services.api_key_create(
        tenant=tenant, name="batch job", upstreams=[loopback_upstream], actor="test"
    )[0]


@pytest.fixture
def foreign_key(other_tenant, loopback_upstream):
    return services.api_key_create(
        tenant=other_tenant, name="globex app", upstreams=[loopback_upstream], actor="test"
    )[0]


def record(api_key, hour, outcome, count, code="", detail="") -> UsageRecord:
    return UsageRecord.objects.create(
        tenant=api_key.tenant,
        api_key=api_key,
        hour=hour,
        outcome=outcome,
        code=code,
        detail=detail,
        count=count,
    )


def expected_totals(records, tenant, since, until, api_key=None) -> dict[str, int]:
    """What the page should count, worked out from the rows the test wrote."""
    totals = dict.fromkeys(OUTCOMES, 0)
    for row in records:
        if row.tenant_id == tenant.pk and since <= row.hour < until and api_key in (None, row.api_key):
            totals[row.outcome] += row.count
    return totals


class UsagePage(HTMLParser):
    """What the tests read of the page: attributes by element id, the chart's bars, tables' body rows."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, dict] = {}
        self.bars: list[dict] = []
        self.tables: dict[str | None, list[dict]] = {}
        self.options: list[dict] = []
        self._table: str | None = None
        self._row: dict[str, list] | None = None
        self._cell: list[str] | None = None
        self._in_body = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs
        if tag == "g" and "bar" in attrs.get("class", "").split():
            self.bars.append({**attrs, "segments": []})
        elif tag == "rect" and "segment" in attrs.get("class", "").split():
            self.bars[-1]["segments"].append(attrs)
        elif tag == "option":
            self.options.append(attrs)
        elif tag == "table":
            self._table = attrs.get("id")
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = {"cells": [], "links": []}
            self.tables[self._table].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._row["cells"].append(self._cell)
        elif tag == "a" and self._row is not None:
            self._row["links"].append(attrs["href"])
        elif tag in ("br", "p") and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"][-1] = " ".join("".join(self._cell).split())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def chart_totals(self) -> dict[str, int]:
        figure = self.by_id["usage-chart"]
        return {outcome: int(figure[f"data-{outcome.replace('_', '-')}"]) for outcome in OUTCOMES}

    def bar_totals(self) -> dict[datetime, int]:
        return {datetime.fromisoformat(bar["data-period"]): int(bar["data-total"]) for bar in self.bars}


def usage_page(client, **params) -> UsagePage:
    answer = client.get(reverse("portal:usage"), params)
    assert answer.status_code == 200
    return UsagePage(answer.content.decode())


def usage_csv(client, **params) -> tuple[Any, list[list[str]]]:
    answer = client.get(reverse("portal:usage_csv"), params)
    assert answer.status_code == 200
    text = b"".join(answer.streaming_content).decode()
    return answer, list(csv.reader(io.StringIO(text, newline="")))


# --- The chart ----------------------------------------------------------------------------------------


@pytest.fixture
def records(api_key, second_key, foreign_key):
    """Rows on both sides of the 24-hour and 30-day edges, of two keys and of another tenant."""
    return [
        record(api_key, THIS_HOUR, "allowed", 5),
        record(api_key, THIS_HOUR, "rejected", 3, "origin_not_allowed", "https://evil.example"),
        record(api_key, THIS_HOUR - timedelta(hours=5), "upstream_error", 2, "upstream_timeout"),
        record(second_key, THIS_HOUR - timedelta(hours=23), "allowed", 11),
        record(second_key, THIS_HOUR - timedelta(hours=23), "rejected", 1, "ip_not_allowed", "198.51.100.7"),
        record(api_key, THIS_HOUR - timedelta(hours=24), "allowed", 1000),  # one hour too old for 24h
        record(second_key, TODAY - timedelta(days=29), "rejected", 40, "rate_limited"),
        record(api_key, TODAY - timedelta(days=30, hours=-23), "allowed", 7000),  # a day too old for 30d
        record(foreign_key, THIS_HOUR, "allowed", 90000),
        record(foreign_key, THIS_HOUR, "rejected", 80000, "invalid_secret"),
    ]


def test_chart_counts_the_last_24_hours_of_the_tenant_only(portal_client, tenant, records):
    page = usage_page(portal_client(Role.VIEWER))
    since = THIS_HOUR - timedelta(hours=23)
    expected = expected_totals(records, tenant, since, THIS_HOUR + timedelta(hours=1))
    assert page.chart_totals() == expected
    assert expected == {"allowed": 16, "rejected": 4, "upstream_error": 2}  # the fixture is what we think
    bars = page.bar_totals()
    assert list(bars) == [since + timedelta(hours=n) for n in range(24)]
    assert bars[THIS_HOUR] == 8 and bars[since] == 12 and bars[THIS_HOUR - timedelta(hours=5)] == 2
    assert sum(bars.values()) == sum(expected.values())
    assert list(bars.values()).count(0) == 21  # empty hours are drawn, as zeros


def test_30_day_range_has_a_bar_per_day(portal_client, tenant, records):
    page = usage_page(portal_client(Role.VIEWER), range="30d")
    since = TODAY - timedelta(days=29)
    expected = expected_totals(records, tenant, since, TODAY + timedelta(days=1))
    assert page.chart_totals() == expected
    assert expected["allowed"] == 1016 and expected["rejected"] == 44
    bars = page.bar_totals()
    assert list(bars) == [since + timedelta(days=n) for n in range(30)]
    assert bars[since] == 40
    for day in (TODAY, TODAY - timedelta(days=1)):
        assert bars[day] == sum(expected_totals(records, tenant, day, day + timedelta(days=1)).values()) > 0


def test_data_table_repeats_every_period(portal_client, records):
    page = usage_page(portal_client(Role.VIEWER))
    rows = page.tables["usage-table"]
    assert len(rows) == 24
    # Hour, allowed, rejected, upstream errors, total; the current hour is the last row.
    assert rows[-1]["cells"] == [THIS_HOUR.strftime("%Y-%m-%d %H:%M"), "5", "3", "0", "8"]


def test_bars_are_drawn_to_scale(portal_client, records):
    page = usage_page(portal_client(Role.VIEWER))
    bars = {datetime.fromisoformat(bar["data-period"]): bar for bar in page.bars}
    allowed, rejected = bars[THIS_HOUR]["segments"]  # 5 allowed under 3 rejected
    assert "segment-allowed" in allowed["class"] and "segment-rejected" in rejected["class"]
    assert allowed["fill"] != rejected["fill"]
    assert float(allowed["height"]) / float(rejected["height"]) == pytest.approx(5 / 3, rel=0.01)
    assert float(rejected["y"]) + float(rejected["height"]) == pytest.approx(float(allowed["y"]), abs=0.01)
    tallest = bars[THIS_HOUR - timedelta(hours=23)]["segments"]  # 12, the most in any hour
    assert sum(float(segment["height"]) for segment in tallest) == pytest.approx(
        float(allowed["height"]) * 12 / 5, rel=0.01
    )
    assert bars[THIS_HOUR - timedelta(hours=1)]["segments"] == []


@pytest.mark.parametrize("value", [0, 1, 4, 5, 9, 41, 99, 1224, 123456])
def test_axis_top_is_round_and_holds_the_tallest_bar(value):
    top = usage_view._axis_max(value)
    assert top >= value and top % usage_view.TICKS == 0
    assert top <= max(2 * value, usage_view.TICKS)


@pytest.mark.parametrize("bad_range", ["7d", "", "24H", "30d' or 1=1", "\x00"])
def test_unknown_range_shows_the_last_24_hours(portal_client, tenant, records, bad_range):
    page = usage_page(portal_client(Role.VIEWER), range=bad_range)
    assert len(page.bars) == 24
    since = THIS_HOUR - timedelta(hours=23)
    assert page.chart_totals() == expected_totals(records, tenant, since, THIS_HOUR + timedelta(hours=1))
    assert "checked" in page.by_id["range-24h"]


def test_a_tenant_without_usage_sees_24_empty_bars(portal_client, api_key):
    page = usage_page(portal_client(Role.VIEWER))
    assert page.chart_totals() == dict.fromkeys(OUTCOMES, 0)
    assert set(page.bar_totals().values()) == {0} and len(page.bars) == 24
    assert page.tables["rejections"] == []


# --- One key ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("span", ["24h", "30d"])
def test_key_filter_counts_that_key_only(portal_client, tenant, records, second_key, span):
    page = usage_page(portal_client(Role.VIEWER), key=second_key.key_id, range=span)
    step, periods = (timedelta(hours=1), 24) if span == "24h" else (timedelta(days=1), 30)
    last = THIS_HOUR if span == "24h" else TODAY
    expected = expected_totals(records, tenant, last - (periods - 1) * step, last + step, api_key=second_key)
    assert page.chart_totals() == expected
    assert sum(expected.values()) > 0
    assert len(page.bars) == periods
    rejections = page.tables["rejections"]
    assert rejections
    assert {row["cells"][0] for row in rejections} == {f"{second_key.name} {second_key.key_id}"}
    selected = [option["value"] for option in page.options if "selected" in option]
    assert selected == [second_key.key_id]


def test_key_selector_lists_the_tenants_keys_only(portal_client, api_key, second_key, foreign_key):
    page = usage_page(portal_client(Role.VIEWER))
    assert [option["value"] for option in page.options] == ["", second_key.key_id, api_key.key_id]
    assert page.by_id["usage-key"]["name"] == "key"
    assert {page.by_id[f"range-{span}"]["value"] for span in ("24h", "30d")} == {"24h", "30d"}


@pytest.mark.parametrize("url_name", ["portal:usage", "portal:usage_csv"])
def test_another_tenants_key_is_404_and_its_rows_never_show(portal_client, records, foreign_key, url_name):
    answer = portal_client(Role.OWNER).get(reverse(url_name), {"key": foreign_key.key_id})
    assert answer.status_code == 404
    assert foreign_key.key_id.encode() not in answer.content


@pytest.mark.parametrize("url_name", ["portal:usage", "portal:usage_csv"])
@pytest.mark.parametrize(
    "key_id", ["pk_nope", "web app", "x" * 5000, "pk_\x00", "' OR 1=1 --", crypto.new_key_id()]
)
def test_malformed_or_unknown_key_is_404(portal_client, api_key, url_name, key_id):
    assert portal_client(Role.VIEWER).get(reverse(url_name), {"key": key_id}).status_code == 404


# --- Rejections ---------------------------------------------------------------------------------------


def test_rejections_by_reason_with_fix_hints(portal_client, api_key, second_key, foreign_key):
    since = THIS_HOUR - timedelta(hours=23)
    record(api_key, THIS_HOUR, "rejected", 9, "origin_not_allowed", "https://evil.example")
    record(api_key, since, "rejected", 4, "origin_not_allowed", "https://evil.example")
    record(second_key, THIS_HOUR, "rejected", 6, "invalid_secret")
    record(api_key, THIS_HOUR, "allowed", 500)
    record(api_key, since - timedelta(hours=1), "rejected", 70, "ip_not_allowed", "192.0.2.1")  # too old
    record(foreign_key, THIS_HOUR, "rejected", 80, "origin_not_allowed", "https://globex.example")

    rows = usage_page(portal_client(Role.DEVELOPER)).tables["rejections"]
    assert [row["cells"][3] for row in rows] == ["13", "6"]  # most frequent first
    origin, secret = rows
    assert origin["cells"][0] == f"{api_key.name} {api_key.key_id}"
    assert origin["cells"][1].startswith("origin_not_allowed Add the origin to the key's allowed origins.")
    assert origin["cells"][2] == "https://evil.example"
    assert reverse("portal:key_edit", args=[api_key.key_id]) in origin["links"]
    assert secret["cells"][0] == f"{second_key.name} {second_key.key_id}"
    assert secret["cells"][1].startswith("invalid_secret ")
    assert secret["cells"][2] == "—"  # nothing recorded about what was refused
    # A wrong secret is fixed in the client, not in the key's settings.
    assert not any("/edit" in link for link in secret["links"])


def test_viewer_sees_hints_but_no_edit_links(portal_client, api_key):
    record(api_key, THIS_HOUR, "rejected", 2, "ip_not_allowed", "203.0.113.9")
    rows = usage_page(portal_client(Role.VIEWER)).tables["rejections"]
    assert len(rows) == 1
    assert "allowed IPs" in rows[0]["cells"][1]
    assert rows[0]["links"] == [reverse("portal:key_detail", args=[api_key.key_id])]


def test_rejection_detail_is_escaped(portal_client, api_key):
    record(api_key, THIS_HOUR, "rejected", 1, "user_agent_not_allowed", "<script>alert(1)</script>")
    answer = portal_client(Role.VIEWER).get(reverse("portal:usage"))
    assert b"<script>alert(1)</script>" not in answer.content
    assert (
        UsagePage(answer.content.decode()).tables["rejections"][0]["cells"][2] == "<script>alert(1)</script>"
    )


def test_the_catch_all_detail_says_there_were_too_many_values(portal_client, api_key):
    record(api_key, THIS_HOUR, "rejected", 7, "origin_not_allowed", usage_store.OTHER_DETAIL)
    record(api_key, THIS_HOUR, "rejected", 3, "origin_not_allowed", "https://evil.example")

    cells = {
        row["cells"][0 + 2]: row["cells"][3]
        for row in usage_page(portal_client(Role.VIEWER)).tables["rejections"]
    }

    assert cells == {"many different values (too many to list each)": "7", "https://evil.example": "3"}


# --- CSV ----------------------------------------------------------------------------------------------


def test_csv_has_one_row_per_period_key_outcome_code_and_detail(portal_client, tenant, records, api_key):
    answer, rows = usage_csv(portal_client(Role.VIEWER))
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    assert answer["Content-Disposition"] == "attachment; filename=usage-acme-24h.csv"
    assert rows[0] == ["period", "key_id", "key_name", "outcome", "code", "detail", "count"]
    since, until = THIS_HOUR - timedelta(hours=23), THIS_HOUR + timedelta(hours=1)
    expected = sorted(
        [
            r.hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
            r.api_key.key_id,
            r.api_key.name,
            r.outcome,
            r.code,
            r.detail,
            str(r.count),
        ]
        for r in records
        if r.tenant_id == tenant.pk and since <= r.hour < until
    )
    assert sorted(rows[1:]) == expected
    assert len(expected) == 5


def test_csv_per_day_and_per_key(portal_client, tenant, records, api_key):
    answer, rows = usage_csv(portal_client(Role.VIEWER), range="30d", key=api_key.key_id)
    assert answer["Content-Disposition"] == "attachment; filename=usage-acme-30d.csv"
    assert {row[1] for row in rows[1:]} == {api_key.key_id}
    # Hours of one UTC day add up to one row.
    record(api_key, TODAY, "allowed", 20)
    _, rows = usage_csv(portal_client(Role.VIEWER), range="30d", key=api_key.key_id)
    today = TODAY.strftime("%Y-%m-%d")
    allowed_today = [row for row in rows[1:] if row[0] == today and row[3] == "allowed"]
    assert allowed_today == [[today, api_key.key_id, api_key.name, "allowed", "", "", "25"]]
    since = TODAY - timedelta(days=29)
    totals = expected_totals(
        [*records, UsageRecord.objects.get(hour=TODAY)],
        tenant,
        since,
        TODAY + timedelta(days=1),
        api_key=api_key,
    )
    assert sum(int(row[6]) for row in rows[1:]) == sum(totals.values())


def test_csv_with_unknown_range_is_the_last_24_hours(portal_client, records):
    answer, rows = usage_csv(portal_client(Role.VIEWER), range="1y")
    assert answer["Content-Disposition"] == "attachment; filename=usage-acme-24h.csv"
    assert len(rows) == 6


@pytest.mark.parametrize("hostile", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_neutralises_formulas(portal_client, api_key, hostile):
    record(api_key, THIS_HOUR, "rejected", 1, "user_agent_not_allowed", hostile)
    api_key.name = hostile
    api_key.save(update_fields=["name"])
    _, rows = usage_csv(portal_client(Role.VIEWER))
    assert rows[1][2] == "'" + hostile
    assert rows[1][5] == "'" + hostile


def test_csv_leaves_ordinary_values_alone(portal_client, api_key):
    record(api_key, THIS_HOUR, "rejected", 1, "origin_not_allowed", 'https://a,b.example "quoted"')
    _, rows = usage_csv(portal_client(Role.VIEWER))
    assert rows[1][5] == 'https://a,b.example "quoted"'


def test_page_links_to_the_csv_of_what_it_shows(portal_client, api_key):
    page = usage_page(portal_client(Role.VIEWER), range="30d", key=api_key.key_id)
    href = page.by_id["usage-csv"]["href"]
    assert href == f"{reverse('portal:usage_csv')}?range=30d&key={api_key.key_id}"


# --- Who may see it -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER])
def test_every_member_sees_usage(portal_client, role):
    client = portal_client(role)
    assert client.get(reverse("portal:usage")).status_code == 200
    assert client.get(reverse("portal:usage_csv")).status_code == 200


@pytest.mark.parametrize("url_name", ["portal:usage", "portal:usage_csv"])
def test_anonymous_is_sent_to_login(client, db, url_name):
    answer = client.get(reverse(url_name))
    assert answer.status_code == 302
    assert answer["Location"].startswith(reverse("portal:login"))


def test_a_member_sees_the_tenant_they_act_for(portal_client, other_tenant, records, foreign_key):
    page = usage_page(portal_client(Role.VIEWER, tenant=other_tenant))
    assert page.chart_totals() == {"allowed": 90000, "rejected": 80000, "upstream_error": 0}
    assert [option["value"] for option in page.options] == ["", foreign_key.key_id]


def test_post_is_refused(portal_client):
    assert portal_client(Role.OWNER).post(reverse("portal:usage")).status_code == 405


# --- requests_today_by_key ---------------------------------------------------------------------------


def test_requests_today_by_key_counts_since_midnight_utc(tenant, api_key, second_key, foreign_key):
    record(api_key, TODAY, "allowed", 3)
    record(api_key, THIS_HOUR, "rejected", 2, "rate_limited")
    record(api_key, THIS_HOUR, "upstream_error", 1, "upstream_timeout")
    record(api_key, TODAY - timedelta(hours=1), "allowed", 50)  # yesterday
    record(second_key, THIS_HOUR, "allowed", 4)
    record(foreign_key, THIS_HOUR, "allowed", 9)
    assert selectors.requests_today_by_key(tenant=tenant, now=NOW) == {
        api_key.key_id: 6,
        second_key.key_id: 4,
    }
