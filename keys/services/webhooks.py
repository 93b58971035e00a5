"""Webhook endpoints (create with a secret shown once, enable, delete), events sent to them, and the
attempts of each delivery: signed, retried with exponential backoff for KEYS_WEBHOOK_RETRY_FOR_SECONDS,
the endpoint disabled (and its tenant's admins told by e-mail) after
KEYS_WEBHOOK_DISABLE_AFTER_FAILURES failed attempts in a row."""

import json
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from keys import crypto, validators, webhook_sender
from keys.alert_models import (
    WEBHOOK_ONLY_EVENTS,
    AlertEvent,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from keys.models import Membership, Role, Tenant
from keys.services.audit import Actor, actor_user, audit_record
from keys.services.tenants import tenant_check_limit

ATTEMPT_LOG_KEEP = 30  # attempts kept per delivery (a day of backoff is about 20)


def _clean_events(events: object) -> list[str]:
    if events is None:
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ValidationError({"events": ["Give a list of event types."]})
    known = set(AlertEvent.values)
    unknown = [e for e in events if e not in known]
    if unknown:
        raise ValidationError({"events": [f"Unknown event type: {e[:60]}." for e in unknown[:5]]})
    return sorted(set(events))


@transaction.atomic
def webhook_endpoint_create(
    *,
    tenant: Tenant,
    url: str,
    events: object = None,
    description: str = "",
    actor: Actor = None,
    ip_address: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint. Returns it and its signing secret (`whsec_…`), which is never shown again."""
    tenant_check_limit(
        tenant=tenant,
        rows=WebhookEndpoint.objects.filter(tenant=tenant),
        setting="KEYS_MAX_WEBHOOKS_PER_TENANT",
        what="webhook endpoints",
    )
    events = _clean_events(events)
    try:
        cleaned = validators.clean_webhook_url(url)
        validators.check_webhook_destination(
            cleaned, allow_private=settings.KEYS_WEBHOOKS_ALLOW_PRIVATE_NETWORK
        )
    except ValidationError as exc:
        raise ValidationError({"url": exc.messages}) from exc
    if not isinstance(description, str) or len(description) > 200:
        raise ValidationError({"description": ["At most 200 characters."]})
    secret = crypto.new_webhook_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=cleaned,
        events=events,
        description=description,
        secret_encrypted=crypto.encrypt(secret),
        hint=secret[-4:],
        created_by=actor_user(actor),
    )
    audit_record(
        action="webhook.created",
        tenant=tenant,
        actor=actor,
        target=endpoint,
        ip_address=ip_address,
        data={"url": endpoint.url, "events": endpoint.events},
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_delete(
    *, endpoint: WebhookEndpoint, actor: Actor = None, ip_address: str | None = None
) -> None:
    audit_record(
        action="webhook.deleted",
        tenant=endpoint.tenant,
        actor=actor,
        target=endpoint,
        ip_address=ip_address,
        data={"url": endpoint.url},
    )
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_enable(
    *, endpoint: WebhookEndpoint, actor: Actor = None, ip_address: str | None = None
) -> WebhookEndpoint:
    """Turn a disabled endpoint back on (its failure count starts again from zero)."""
    if not endpoint.is_active:
        endpoint.is_active = True
        endpoint.disabled_at = None
        endpoint.disabled_reason = ""
        endpoint.consecutive_failures = 0
        endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason", "consecutive_failures"])
        audit_record(
            action="webhook.enabled",
            tenant=endpoint.tenant,
            actor=actor,
            target=endpoint,
            ip_address=ip_address,
        )
    return endpoint


def _new_event_id() -> str:
    return "evt_" + "".join(secrets.choice(crypto.BASE62) for _ in range(24))


@transaction.atomic
def event_emit(
    *,
    tenant: Tenant,
    event_type: str,
    data: Mapping[str, object],
    endpoints: Iterable[WebhookEndpoint] | None = None,
    now: datetime | None = None,
) -> list[WebhookDelivery]:
    """Queue one event for each of the tenant's active endpoints that want it (or for `endpoints`); the
    first attempt starts after commit on a Celery worker. The same event id goes to every endpoint."""
    if event_type not in AlertEvent.values and event_type not in WEBHOOK_ONLY_EVENTS:
        raise ValueError(f"unknown event type {event_type}")
    now = now or timezone.now()
    event_id = _new_event_id()
    body = json.dumps(
        {"id": event_id, "type": event_type, "created": int(now.timestamp()), "data": dict(data)},
        separators=(",", ":"),
        sort_keys=True,
    )
    if endpoints is None:
        endpoints = WebhookEndpoint.objects.filter(tenant=tenant, is_active=True)
    deliveries = [
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            event_id=event_id,
            event_type=event_type,
            body=body,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint in endpoints
        if endpoint.tenant_id == tenant.pk and endpoint.wants(event_type)
    ]
    ids = [delivery.pk for delivery in deliveries]
    if ids:
        transaction.on_commit(lambda: _deliver_later(ids))
    return deliveries


def _deliver_later(ids: list[int]) -> None:
    from keys import tasks  # tasks imports the jobs, which import the services: import at call time

    for delivery_id in ids:
        tasks.webhook_deliver.delay(delivery_id)


def webhook_endpoint_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Send a `webhook.test` event to this endpoint (active or not: a tenant checks a fix before enabling)."""
    return event_emit(
        tenant=endpoint.tenant,
        event_type="webhook.test",
        data={"message": "A test event from the API-key gateway.", "endpoint": endpoint.pk},
        endpoints=[endpoint],
    )[0]


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after the `attempts`-th failed attempt: base, 2×base, 4×base… at most an hour."""
    base = settings.KEYS_WEBHOOK_RETRY_BASE_SECONDS
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 3600))


def webhook_delivery_attempt(*, delivery_id: int, now: datetime | None = None) -> str:
    """Make one attempt of a pending delivery that is due; returns its status afterwards. Two workers
    never attempt the same delivery at once (the row is locked while claiming it)."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True)
            .select_related("endpoint")
            .filter(pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
            .first()
        )
        if delivery is None:
            return "not due"
        # Claimed: no other worker picks it until this attempt writes its outcome.
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=now + timedelta(seconds=settings.KEYS_WEBHOOK_TIMEOUT_SECONDS + 60)
        )
    endpoint = delivery.endpoint
    if not endpoint.is_active and delivery.event_type not in WEBHOOK_ONLY_EVENTS:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, next_attempt_at=None
        )
        return DeliveryStatus.FAILED
    body = delivery.body.encode()
    signature = crypto.webhook_signature(
        secret=crypto.decrypt(endpoint.secret_encrypted), timestamp=int(now.timestamp()), body=body
    )
    attempt = webhook_sender.post(
        url=endpoint.url,
        body=body,
        headers={"Webhook-Signature": signature, "Webhook-Id": delivery.event_id},
    )
    return _attempt_record(delivery=delivery, attempt=attempt, now=now)


@transaction.atomic
def _attempt_record(*, delivery: WebhookDelivery, attempt: webhook_sender.Attempt, now: datetime) -> str:
    endpoint = WebhookEndpoint.objects.select_for_update().filter(pk=delivery.endpoint_id).first()
    if endpoint is None:
        return DeliveryStatus.FAILED  # deleted while the attempt was out: its deliveries went with it
    delivery.attempts += 1
    delivery.last_status_code = attempt.status_code
    delivery.attempt_log = [
        *delivery.attempt_log,
        {
            "at": now.isoformat(),
            "status_code": attempt.status_code,
            "error": attempt.error,
            "response": attempt.response,
            "duration_ms": attempt.duration_ms,
        },
    ][-ATTEMPT_LOG_KEEP:]
    if attempt.succeeded:
        delivery.status = DeliveryStatus.SUCCEEDED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        if endpoint.consecutive_failures:
            endpoint.consecutive_failures = 0
            endpoint.save(update_fields=["consecutive_failures"])
    else:
        next_at = now + retry_delay(delivery.attempts)
        give_up_at = delivery.created_at + timedelta(seconds=settings.KEYS_WEBHOOK_RETRY_FOR_SECONDS)
        if next_at > give_up_at:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        else:
            delivery.next_attempt_at = next_at
        if delivery.event_type not in WEBHOOK_ONLY_EVENTS:  # a failing test says nothing of production
            endpoint.consecutive_failures += 1
            endpoint.save(update_fields=["consecutive_failures"])
            if (
                endpoint.is_active
                and endpoint.consecutive_failures >= settings.KEYS_WEBHOOK_DISABLE_AFTER_FAILURES
            ):
                _endpoint_disable(endpoint=endpoint, now=now, last_error=attempt.error)
                delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
    delivery.save(
        update_fields=[
            "attempts",
            "last_status_code",
            "attempt_log",
            "status",
            "delivered_at",
            "next_attempt_at",
        ]
    )
    return delivery.status


def _endpoint_disable(*, endpoint: WebhookEndpoint, now: datetime, last_error: str) -> None:
    endpoint.is_active = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = (
        f"{endpoint.consecutive_failures} failed attempts in a row (last: {last_error})"[:200]
    )
    endpoint.save(update_fields=["is_active", "disabled_at", "disabled_reason"])
    WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None
    )
    audit_record(
        action="webhook.disabled",
        tenant=endpoint.tenant,
        actor="webhook delivery",
        target=endpoint,
        data={"url": endpoint.url, "reason": endpoint.disabled_reason},
    )
    recipients = tenant_admin_emails(tenant=endpoint.tenant)
    if recipients:
        transaction.on_commit(
            lambda: send_mail(
                subject=f"[{endpoint.tenant.slug}] Webhook endpoint disabled: {endpoint.url}",
                message=(
                    f"The webhook endpoint {endpoint.url} of {endpoint.tenant.name or endpoint.tenant.slug} "
                    f"was disabled after {endpoint.consecutive_failures} failed deliveries in a row "
                    f"(last: {last_error}).\n\nFix the receiver, then enable the endpoint again "
                    "(portal: Webhooks, or the API); events in the meantime were not delivered.\n"
                ),
                from_email=None,
                recipient_list=recipients,
                fail_silently=True,
            )
        )


def tenant_admin_emails(*, tenant: Tenant) -> list[str]:
    """The addresses of the tenant's owners and admins (who manage its webhooks)."""
    rows = Membership.objects.filter(tenant=tenant, role__in=[Role.OWNER, Role.ADMIN]).select_related("user")
    return sorted({m.user.email for m in rows if m.user.email})


def webhook_deliveries_retry(*, now: datetime | None = None, limit: int = 500) -> int:
    """Attempt the pending deliveries that are due (the retries, and first attempts a worker lost)."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for pk in due if webhook_delivery_attempt(delivery_id=pk, now=now) != "not due")
