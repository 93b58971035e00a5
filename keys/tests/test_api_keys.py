"""The management API's keys: create, list, read, update, revoke, rotate, usage (DESIGN.md "Key fields")."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from keys import selectors, services
from keys.models import ApiKey, UsageRecord
from keys.tests.api_helpers import DESIGN_KEY_FIELDS, error_of


@pytest.fixture
def created(api, loopback_upstream):
    """A key made through the API: its JSON answer, secret included."""
    response = api.post(
        "/api/v1/keys",
        {"name": "web app", "upstreams": ["local"], "allowed_origins": ["https://app.example.com"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_create_key_answers_201_with_design_fields_and_its_secret(created, tenant):
    assert set(created) == DESIGN_KEY_FIELDS | {"secret"}
    assert created["id"].startswith("pk_") and created["secret"].startswith("sk_")
    assert created["upstreams"] == ["local"]
    assert created["created_at"].endswith("Z")
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert api_key.tenant == tenant
    assert selectors.api_key_secret_valid(api_key=api_key, secret=created["secret"])


def test_create_key_answer_is_not_cacheable(api):
    response = api.post("/api/v1/keys", {"name": "x"}, format="json")
    assert response["Cache-Control"] == "no-store"


def test_read_and_list_answer_design_fields_without_secret(api, created):
    read = api.get(f"/api/v1/keys/{created['id']}").json()
    listed = api.get("/api/v1/keys").json()
    assert set(read) == DESIGN_KEY_FIELDS
    assert listed["count"] == 1 and set(listed["results"][0]) == DESIGN_KEY_FIELDS
    assert {k: v for k, v in created.items() if k != "secret"} == read


def test_list_is_paginated(api, tenant):
    for index in range(5):
        services.api_key_create(tenant=tenant, name=f"key {index}", actor="test")
    first = api.get("/api/v1/keys", {"page_size": 2}).json()
    assert first["count"] == 5 and len(first["results"]) == 2 and first["next"]
    last = api.get("/api/v1/keys", {"page_size": 2, "page": 3}).json()
    assert len(last["results"]) == 1 and last["next"] is None


@pytest.mark.parametrize("page", ["0", "99", "abc", "-1"])
def test_list_out_of_range_page_is_404_error_body(api, tenant, page):
    services.api_key_create(tenant=tenant, name="one", actor="test")
    error_of(api.get("/api/v1/keys", {"page": page}), 404, "not_found")


def test_list_filters_by_name_and_state(api, tenant):
    web, _ = services.api_key_create(tenant=tenant, name="Web app", actor="test")
    server, _ = services.api_key_create(tenant=tenant, name="server", actor="test")
    services.api_key_create(
        tenant=tenant, name="old", expires_at=timezone.now() - timedelta(days=1), actor="test"
    )
    services.api_key_revoke(api_key=server, actor="test")

    def ids(**query):
        return [row["id"] for row in api.get("/api/v1/keys", query).json()["results"]]

    assert ids(name="web") == [web.key_id]
    assert ids(state="revoked") == [server.key_id]
    assert ids(state="active") == [web.key_id]
    assert len(ids(state="expired")) == 1
    assert len(ids()) == 3


@pytest.mark.parametrize("query", [{"state": "deleted"}, {"state": "Active"}, {"name": "x" * 201}])
def test_list_with_bad_filter_is_400(api, query):
    error = error_of(api.get("/api/v1/keys", query), 400, "invalid_request")
    assert set(error["fields"]) == set(query)


def test_patch_changes_allowlists_and_limits_normalised(api, created, tenant_upstream):
    response = api.patch(
        f"/api/v1/keys/{created['id']}",
        {
            "allowed_origins": ["HTTPS://App.Example.com:443", "*.example.com"],
            "allowed_ips": ["203.0.113.0/24", "2001:db8::1"],
            "allowed_http_methods": ["get", "POST"],
            "allowed_rpc_methods": ["eth_blockNumber"],
            "rate_limit": "100/m",
            "daily_quota": 1000,
            "secret_required": True,
            "upstreams": ["acme-api", "local"],
            "expires_at": "2030-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["allowed_origins"] == ["https://app.example.com", "*.example.com"]
    assert body["allowed_ips"] == ["203.0.113.0/24", "2001:db8::1/128"]
    assert body["allowed_http_methods"] == ["GET", "POST"]
    assert body["rate_limit"] == "100/m" and body["daily_quota"] == 1000 and body["secret_required"] is True
    assert sorted(body["upstreams"]) == ["acme-api", "local"]
    assert body["expires_at"] == "2030-01-01T00:00:00Z"
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert api_key.allowed_origins == body["allowed_origins"] and api_key.rate_limit == "100/m"


def test_report_only_is_read_and_written_per_check(api, created):
    assert created["report_only"] == []
    url = f"/api/v1/keys/{created['id']}"
    response = api.patch(url, {"report_only": ["rate_limit", "allowed_origins", "rate_limit"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["report_only"] == ["allowed_origins", "rate_limit"]  # once each, in check order
    assert ApiKey.objects.get(key_id=created["id"]).report_only == ["allowed_origins", "rate_limit"]
    assert api.patch(url, {"report_only": []}, format="json").json()["report_only"] == []


def test_patch_keeps_fields_it_does_not_name(api, created):
    api.patch(f"/api/v1/keys/{created['id']}", {"name": "renamed"}, format="json")
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert api_key.name == "renamed" and api_key.allowed_origins == ["https://app.example.com"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("allowed_origins", ["https://exa mple.com"]),
        ("allowed_origins", ["*"]),
        ("allowed_origins", "https://app.example.com"),
        ("allowed_origins", [1]),
        ("allowed_ips", ["10.0.0.1/8"]),
        ("allowed_ips", ["not-an-ip"]),
        ("allowed_http_methods", ["get me"]),
        ("allowed_rpc_methods", ["eth call"]),
        ("allowed_user_agents", [""]),
        ("rate_limit", "fast"),
        ("rate_limit", "0/m"),
        ("daily_quota", -1),
        ("daily_quota", "many"),
        ("daily_quota", 1.5),
        ("daily_quota", 2**40),
        ("name", ""),
        ("name", "x" * 201),
        ("name", "nul\x00byte"),
        ("expires_at", "tomorrow"),
        ("secret_required", "perhaps"),
        ("upstreams", ["no-such-upstream"]),
        ("upstreams", "local"),
        ("report_only", ["secret_required"]),
        ("report_only", "allowed_origins"),
        ("report_only", [None]),
    ],
)
def test_patch_with_bad_value_is_400_naming_the_field_and_changes_nothing(api, created, field, value):
    error = error_of(
        api.patch(f"/api/v1/keys/{created['id']}", {field: value}, format="json"), 400, "invalid_request"
    )
    assert list(error["fields"]) == [field]
    assert api.get(f"/api/v1/keys/{created['id']}").json() == {
        k: v for k, v in created.items() if k != "secret"
    }


def test_key_cannot_name_another_tenants_upstream(api, other_tenant_upstream):
    response = api.post("/api/v1/keys", {"name": "x", "upstreams": ["globex-api"]}, format="json")
    assert error_of(response, 400, "invalid_request")["fields"] == {
        "upstreams": ["Unknown upstream: globex-api."]
    }


def test_create_without_name_is_400(api):
    assert "name" in error_of(api.post("/api/v1/keys", {}, format="json"), 400, "invalid_request")["fields"]


@pytest.mark.parametrize(
    "body, content_type",
    [(b"{", "application/json"), (b"name=x", "application/json"), (b'{"name": NaN}', "application/json")],
)
def test_malformed_json_is_400(api, body, content_type):
    error_of(api.generic("POST", "/api/v1/keys", body, content_type), 400, "invalid_request")


def test_form_body_is_415(api):
    error_of(api.post("/api/v1/keys", {"name": "x"}), 415, "unsupported_media_type")


def test_revoke_is_204_and_the_key_stops_working_at_once(api, created):
    assert api.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert api_key.state == "revoked"
    first = api_key.revoked_at
    assert api.delete(f"/api/v1/keys/{created['id']}").status_code == 204
    assert ApiKey.objects.get(key_id=created["id"]).revoked_at == first
    assert api.get(f"/api/v1/keys/{created['id']}").json()["revoked_at"] is not None


def test_rotate_answers_a_new_secret_and_the_old_one_works_for_the_default_day(api, created):
    response = api.post(f"/api/v1/keys/{created['id']}/rotate", format="json")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == DESIGN_KEY_FIELDS | {"secret"} and body["secret"] != created["secret"]
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert selectors.api_key_secret_valid(api_key=api_key, secret=body["secret"])
    assert selectors.api_key_secret_valid(api_key=api_key, secret=created["secret"])
    assert api_key.previous_secret_expires_at is not None
    grace = api_key.previous_secret_expires_at - timezone.now()
    assert timedelta(hours=23, minutes=59) < grace <= timedelta(hours=24)


def test_rotate_with_zero_grace_stops_the_old_secret_at_once(api, created):
    body = api.post(f"/api/v1/keys/{created['id']}/rotate", {"grace_seconds": 0}, format="json").json()
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert not selectors.api_key_secret_valid(api_key=api_key, secret=created["secret"])
    assert selectors.api_key_secret_valid(api_key=api_key, secret=body["secret"])


@pytest.mark.parametrize("grace", [-1, "soon", 1.5, True, None, 10**12])
def test_rotate_with_bad_grace_is_400_and_keeps_the_secret(api, created, grace):
    response = api.post(f"/api/v1/keys/{created['id']}/rotate", {"grace_seconds": grace}, format="json")
    assert list(error_of(response, 400, "invalid_request")["fields"]) == ["grace_seconds"]
    api_key = ApiKey.objects.get(key_id=created["id"])
    assert selectors.api_key_secret_valid(api_key=api_key, secret=created["secret"])


def test_usage_sums_roll_up_rows_per_hour_and_day_by_outcome_and_code(api, tenant, api_key):
    day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = [
        (day + timedelta(hours=1), "allowed", "", 10),
        (day + timedelta(hours=2), "allowed", "", 5),
        (day + timedelta(hours=2), "rejected", "origin_not_allowed", 3),
        (day + timedelta(hours=3), "rejected", "rate_limited", 2),
    ]
    for hour, outcome, code, count in rows:
        UsageRecord.objects.create(
            tenant=tenant, api_key=api_key, hour=hour, outcome=outcome, code=code, count=count
        )
    daily = api.get(f"/api/v1/keys/{api_key.key_id}/usage").json()
    assert daily["granularity"] == "day" and daily["key"] == api_key.key_id
    assert [(r["outcome"], r["code"], r["count"]) for r in daily["results"]] == [
        ("allowed", "", 15),
        ("rejected", "origin_not_allowed", 3),
        ("rejected", "rate_limited", 2),
    ]
    assert {r["period"] for r in daily["results"]} == {day.strftime("%Y-%m-%dT%H:%M:%SZ")}
    hourly = api.get(f"/api/v1/keys/{api_key.key_id}/usage", {"granularity": "hour"}).json()
    assert len(hourly["results"]) == 4
    assert hourly["results"][0]["period"] == (day + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    window = {
        "since": (day + timedelta(hours=2)).isoformat(),
        "until": (day + timedelta(hours=3)).isoformat(),
    }
    narrow = api.get(f"/api/v1/keys/{api_key.key_id}/usage", {"granularity": "hour", **window}).json()
    assert sum(r["count"] for r in narrow["results"]) == 8


@pytest.mark.parametrize(
    "query",
    [
        {"granularity": "week"},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        {"since": "yesterday"},
        {"until": "0001-01-01T00:00:00Z"},
    ],
)
def test_usage_with_bad_query_is_400(api, api_key, query):
    error_of(api.get(f"/api/v1/keys/{api_key.key_id}/usage", query), 400, "invalid_request")


def test_put_is_405_in_the_error_body(api, created):
    response = api.put(f"/api/v1/keys/{created['id']}", {"name": "x"}, format="json")
    error_of(response, 405, "method_not_allowed")
    assert "PATCH" in response["Allow"]


def test_unknown_key_and_unknown_path_are_404_error_bodies(api):
    error_of(api.get("/api/v1/keys/pk_nothing"), 404, "not_found")
    error_of(api.post("/api/v1/nothing", {}, format="json"), 404, "not_found")
    error_of(api.get("/api/v1/keys/"), 404, "not_found")


def test_every_answer_carries_a_request_id_and_a_sane_incoming_one_is_kept(api):
    assert len(api.get("/api/v1/keys")["X-Request-Id"]) >= 8
    assert api.get("/api/v1/keys", HTTP_X_REQUEST_ID="trace-12345678")["X-Request-Id"] == "trace-12345678"
    assert api.get("/api/v1/keys", HTTP_X_REQUEST_ID="bad id\n")["X-Request-Id"] != "bad id\n"


@override_settings(CORS_ALLOWED_ORIGINS=["https://console.example.com"])
def test_cors_answers_listed_origins_on_api_paths_only(db, api):
    preflight = APIClient().options(
        "/api/v1/keys",
        HTTP_ORIGIN="https://console.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, x-tenant",
    )
    assert preflight["Access-Control-Allow-Origin"] == "https://console.example.com"
    assert "x-tenant" in preflight["Access-Control-Allow-Headers"]
    listed = api.get("/api/v1/keys", HTTP_ORIGIN="https://console.example.com")
    assert "X-Request-Id" in listed["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in api.get("/api/v1/keys", HTTP_ORIGIN="https://evil.test")
    assert "Access-Control-Allow-Origin" not in APIClient().get(
        "/healthz", HTTP_ORIGIN="https://console.example.com"
    )


def test_cors_allows_no_origin_by_default(db, api):
    assert "Access-Control-Allow-Origin" not in api.get("/api/v1/keys", HTTP_ORIGIN="https://any.example.com")
