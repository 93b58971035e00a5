"""/api/v1/webhooks and /api/v1/alerts: the secret once, roles, tenants apart, the contract's errors."""

import pytest
from django.test import override_settings

from keys.alert_models import WebhookDelivery, WebhookEndpoint
from keys.services import webhooks
from keys.tests.api_helpers import error_of

pytestmark = pytest.mark.django_db

LOOPBACK_ALLOWED = override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True)


@LOOPBACK_ALLOWED
def test_webhook_secret_is_in_the_create_answer_only(api):
    created = api.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:9/h", "events": ["key.revoked"]}, format="json"
    )
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and created["Cache-Control"].startswith("no-store")
    endpoint_id = created.json()["id"]
    for path in ("/api/v1/webhooks", f"/api/v1/webhooks/{endpoint_id}"):
        assert secret not in api.get(path).content.decode()
    assert secret not in WebhookEndpoint.objects.get().secret_encrypted


@LOOPBACK_ALLOWED
def test_send_test_event_and_read_its_deliveries(api, monkeypatch):
    monkeypatch.setattr(webhooks, "_deliver_later", lambda ids: None)
    endpoint_id = api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"}, format="json").json()["id"]
    sent = api.post(f"/api/v1/webhooks/{endpoint_id}/test")
    assert sent.status_code == 202 and sent.json()["event_type"] == "webhook.test"
    listed = api.get(f"/api/v1/webhooks/{endpoint_id}/deliveries").json()["results"]
    assert [d["event_id"] for d in listed] == [WebhookDelivery.objects.get().event_id]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "http://example.com/h"}, "url"),
        ({"url": "https://10.1.2.3/"}, "url"),
        ({"url": "https://example.com/", "events": ["nope"]}, "events"),
        ({"url": "https://e.com/", "secret": "x"}, "secret"),
    ],
)
def test_bad_webhooks_are_400_with_the_field(api, body, field):
    error = error_of(api.post("/api/v1/webhooks", body, format="json"), 400, "invalid_request")
    assert field in error["fields"]


@LOOPBACK_ALLOWED
def test_another_tenants_endpoint_is_404(api, other_api):
    endpoint_id = api.post("/api/v1/webhooks", {"url": "http://127.0.0.1:9/h"}, format="json").json()["id"]
    error_of(other_api.get(f"/api/v1/webhooks/{endpoint_id}"), 404, "not_found")
    error_of(other_api.post(f"/api/v1/webhooks/{endpoint_id}/test"), 404, "not_found")
    error_of(other_api.delete(f"/api/v1/webhooks/{endpoint_id}"), 404, "not_found")


def test_viewers_read_alert_rules_and_cannot_touch_webhooks(session_client):
    viewer = session_client("viewer")
    assert viewer.get("/api/v1/alerts").status_code == 200
    error_of(viewer.get("/api/v1/webhooks"), 403, "permission_denied")
    error_of(viewer.post("/api/v1/alerts", {"event": "key.revoked"}, format="json"), 403, "permission_denied")


def test_alert_rule_create_read_delete(api, api_key, tenant):
    owner = tenant.memberships.get(role="owner").user
    created = api.post(
        "/api/v1/alerts",
        {
            "event": "quota.threshold",
            "levels": [50, 80, 100],
            "key": api_key.key_id,
            "recipients": [owner.email],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    rule = created.json()
    assert (
        rule["levels"] == [50, 80, 100]
        and rule["key"] == api_key.key_id
        and rule["recipients"] == [owner.email]
    )
    assert api.get(f"/api/v1/alerts/{rule['id']}").json() == rule
    assert api.delete(f"/api/v1/alerts/{rule['id']}").status_code == 204


@pytest.mark.parametrize(
    "body, field",
    [
        ({"event": "quota.threshold", "levels": [75]}, "levels"),
        ({"event": "key.revoked", "key": "pk_nope"}, "key"),
        ({"event": "key.revoked", "recipients": ["stranger@else.example"]}, "recipients"),
        ({"event": "key.leaked"}, "event"),
        ({"event": "key.unused", "tenant": 2}, "tenant"),
    ],
)
def test_bad_alert_rules_are_400_with_the_field(api, body, field):
    error = error_of(api.post("/api/v1/alerts", body, format="json"), 400, "invalid_request")
    assert field in error["fields"]
