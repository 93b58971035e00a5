"""Alert rules, webhook endpoints and their deliveries: every read takes the tenant."""

from django.db.models import QuerySet

from keys.alert_models import AlertRule, WebhookDelivery, WebhookEndpoint
from keys.models import Tenant


def alert_rule_list(*, tenant: Tenant) -> QuerySet[AlertRule]:
    return (
        AlertRule.objects.filter(tenant=tenant)
        .select_related("api_key")
        .prefetch_related("email_recipients")
        .order_by("-created_at", "-pk")
    )


def alert_rule_get(*, tenant: Tenant, rule_id: int) -> AlertRule:
    return alert_rule_list(tenant=tenant).get(pk=rule_id)


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant=tenant).order_by("-created_at", "-pk")


def webhook_endpoint_get(*, tenant: Tenant, endpoint_id: int) -> WebhookEndpoint:
    return webhook_endpoint_list(tenant=tenant).get(pk=endpoint_id)


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")
