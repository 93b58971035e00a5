"""The alerts and webhooks pages: a rule made from the form, an endpoint's secret shown once, a test
event to a real receiver on loopback and its answer on the endpoint's page, the leak-report choice."""

import pytest
from django.test import override_settings
from django.urls import reverse

from keys.alert_models import AlertRule, WebhookEndpoint
from keys.models import Role
from keys.services import webhooks
from keys.tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.django_db


def test_an_admin_makes_a_quota_rule_for_one_key_mailing_a_member(portal_client, api_key):
    client = portal_client(Role.ADMIN)
    answer = client.post(
        reverse("portal:alert_create"),
        {
            "event": "quota.threshold",
            "key": api_key.key_id,
            "levels": ["50", "100"],
            "days": "9",
            "renotify_minutes": "60",
            "recipients": [str(client.user.pk)],
            "send_webhooks": "on",
        },
    )
    assert answer.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.levels, rule.api_key, rule.days, rule.renotify_minutes) == ([50, 100], api_key, None, 60)
    assert list(rule.email_recipients.all()) == [client.user]
    assert "Daily quota reaches a level" in client.get(reverse("portal:alert_list")).content.decode()


def test_a_rule_with_bad_values_shows_form_errors(portal_client):
    answer = portal_client(Role.ADMIN).post(
        reverse("portal:alert_create"), {"event": "upstream_errors.share", "threshold": "150"}
    )
    assert answer.status_code == 200 and "from 1 to 100" in answer.content.decode()
    assert not AlertRule.objects.exists()


@override_settings(KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK=True)
def test_endpoint_secret_is_shown_once_and_a_test_event_shows_its_answer(portal_client, monkeypatch):
    monkeypatch.setattr(webhooks, "_deliver_later", lambda ids: None)
    client = portal_client(Role.ADMIN)
    with WebhookReceiver(status=418) as receiver:
        form = client.get(reverse("portal:webhook_create")).content.decode()
        once = form.split('name="once" value="')[1].split('"')[0]
        created = client.post(reverse("portal:webhook_create"), {"url": receiver.url, "once": once})
        endpoint = WebhookEndpoint.objects.get()
        secret = created.content.decode().split('id="secret">')[1].split("<")[0]
        assert secret.startswith("whsec_") and created["Cache-Control"].startswith("no-store")
        detail_url = reverse("portal:webhook_detail", args=[endpoint.pk])
        assert secret not in client.get(detail_url).content.decode()
        assert client.post(reverse("portal:webhook_test", args=[endpoint.pk])).status_code == 302
        webhooks.webhook_deliveries_retry()
    page = client.get(detail_url).content.decode()
    assert "webhook.test" in page and "418" in page and "receiver says no" in page
    assert len(receiver.received) == 1


def test_a_public_http_url_is_a_form_error(portal_client):
    client = portal_client(Role.ADMIN)
    answer = client.post(reverse("portal:webhook_create"), {"url": "http://93.184.215.14/x"})
    assert answer.status_code == 200 and "must use https" in answer.content.decode()


def test_the_leak_report_choice_is_saved(portal_client, tenant):
    client = portal_client(Role.OWNER)
    assert client.post(reverse("portal:leak_response"), {"leak_response": "alert"}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.leak_response == "alert"
