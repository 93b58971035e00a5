"""Leaked-key intake: GitHub secret scanning's partner alerts, verified, matched and acted on.

GitHub signs the raw body with ECDSA (P-256, SHA-256; the signature base64 DER) under a key it names in
GITHUB-PUBLIC-KEY-IDENTIFIER; the operator copies GitHub's public keys into
KEYS_SECRET_SCANNING_PUBLIC_KEYS. Each reported token is checked for its format and checksum before any
lookup; a key secret (current, or the previous one in its grace period), a management token or an access
token that matches is revoked at once or only alerted on, as its tenant chose (Tenant.leak_response),
with a `secret.leaked` audit event naming where it leaked.
"""

import base64
import binascii
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from keys import crypto
from keys.models import AccessToken, ApiKey, ManagementToken, Tenant
from keys.services.api_keys import access_token_revoke, api_key_revoke
from keys.services.audit import Actor, audit_record
from keys.services.management_tokens import management_token_revoke
from keys.services.webhooks import event_emit, tenant_admin_emails

ACTOR = "GitHub secret scanning"
MAX_TOKENS = 1000  # tokens per report; GitHub sends far fewer
FIELD_MAX = 2000  # characters kept of url, type, source
TOKEN_TYPES = {
    crypto.SECRET_PREFIX: "keyportal_key_secret",
    crypto.MANAGEMENT_TOKEN_PREFIX: "keyportal_management_token",
    crypto.ACCESS_TOKEN_PREFIX: "keyportal_access_token",
}


class ReportRefused(Exception):
    """The report is not GitHub's (signature) or not a report (shape): answered 4xx, nothing done."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def signature_verify(*, body: bytes, key_identifier: str, signature: str) -> None:
    """Raise ReportRefused unless `signature` is a valid ECDSA signature of `body` under the configured
    public key named `key_identifier`."""
    try:
        keys = json.loads(settings.KEYS_SECRET_SCANNING_PUBLIC_KEYS or "{}")
    except ValueError:
        keys = {}
    pem = keys.get(key_identifier) if isinstance(keys, dict) and key_identifier else None
    if not isinstance(pem, str):
        raise ReportRefused("not_authenticated", "Unknown GITHUB-PUBLIC-KEY-IDENTIFIER.")
    try:
        public_key = serialization.load_pem_public_key(pem.encode())
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ReportRefused("not_authenticated", "Malformed signature or public key.") from exc
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ReportRefused("not_authenticated", "The configured public key is not an ECDSA key.")
    try:
        public_key.verify(raw, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise ReportRefused("not_authenticated", "The signature does not match the body.") from exc


@dataclass(frozen=True)
class Reported:
    token: str
    type: str
    url: str
    source: str


def report_parse(body: bytes) -> list[Reported]:
    """GitHub's array of {token, type, url, source}; ReportRefused for anything else."""
    try:
        items = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportRefused("invalid_request", "The body is not JSON.") from exc
    if not isinstance(items, list) or len(items) > MAX_TOKENS:
        raise ReportRefused("invalid_request", f"Send a JSON array of at most {MAX_TOKENS} reports.")
    reported = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise ReportRefused("invalid_request", "Each report is an object with a string token.")

        def text(name: str, item: dict[str, object] = item) -> str:
            value = item.get(name)
            return value[:FIELD_MAX] if isinstance(value, str) else ""

        reported.append(Reported(item["token"][:200], text("type"), text("url"), text("source")))
    return reported


def _tenant_of(token: str) -> tuple[Tenant, object] | None:
    """The tenant and row whose secret this is, or None (malformed, unknown, already revoked alike)."""
    prefix = token[:3]
    if prefix not in TOKEN_TYPES or not crypto.well_formed(token, prefix):
        return None
    digest = crypto.hash_secret(token)
    if prefix == crypto.SECRET_PREFIX:
        now = timezone.now()
        key = (
            ApiKey.objects.select_related("tenant").filter(secret_hash=digest).first()
            or ApiKey.objects.select_related("tenant")
            .filter(previous_secret_hash=digest, previous_secret_expires_at__gt=now)
            .first()
        )
        return (key.tenant, key) if key else None
    if prefix == crypto.MANAGEMENT_TOKEN_PREFIX:
        mt = ManagementToken.objects.select_related("tenant").filter(token_hash=digest).first()
        return (mt.tenant, mt) if mt else None
    at = AccessToken.objects.select_related("api_key__tenant").filter(token_hash=digest).first()
    return (at.api_key.tenant, at) if at else None


@transaction.atomic
def leak_report_handle(*, reported: list[Reported], ip_address: str | None = None) -> list[dict[str, str]]:
    """Act on each reported token; returns GitHub's answer: [{token_raw, token_type, label}]. A token of
    ours that works (or worked) is a true positive; anything else a false positive."""
    answer = []
    for report in reported:
        found = _tenant_of(report.token)
        label = "false_positive"
        token_type = TOKEN_TYPES.get(report.token[:3], report.type[:100] or "unknown")
        if found is not None:
            tenant, row = found
            label = "true_positive"
            _leak_act(tenant=tenant, row=row, report=report, ip_address=ip_address)
        answer.append({"token_raw": report.token, "token_type": token_type, "label": label})
    return answer


def _leak_act(*, tenant: Tenant, row: object, report: Reported, ip_address: str | None) -> None:
    revoke = tenant.leak_response == "revoke"
    if isinstance(row, ApiKey):
        kind, target_name = "key secret", row.key_id
        already = row.revoked_at is not None
        if revoke:
            api_key_revoke(api_key=row, actor=ACTOR, ip_address=ip_address)
    elif isinstance(row, ManagementToken):
        kind, target_name = "management token", f"…{row.hint}"
        already = row.revoked_at is not None
        if revoke:
            management_token_revoke(token=row, actor=ACTOR, ip_address=ip_address)
    else:
        assert isinstance(row, AccessToken)  # noqa: S101 - _tenant_of returns nothing else
        kind, target_name = "access token", row.api_key.key_id
        already = row.revoked_at is not None
        if revoke:
            access_token_revoke(token=row, actor=ACTOR, ip_address=ip_address)
    target = row if isinstance(row, ApiKey | ManagementToken) else row.api_key
    data = {
        "kind": kind,
        "url": report.url,
        "source": report.source,
        "type": report.type[:100],
        "action": "revoked" if revoke and not already else ("already revoked" if already else "alerted"),
    }
    audit_record(
        action="secret.leaked", tenant=tenant, actor=ACTOR, target=target, ip_address=ip_address, data=data
    )
    event_emit(tenant=tenant, event_type="key.leaked", data={"target": target_name, **data})
    recipients = tenant_admin_emails(tenant=tenant)
    if recipients:
        subject = f"[{tenant.slug}] A {kind} of {target_name} was found in public"
        body = (
            f"GitHub secret scanning found a {kind} of {target_name} at:\n{report.url}\n\n"
            + (
                "It has been revoked: calls with it are refused from now on. Make a new one in the portal."
                if data["action"] == "revoked"
                else "It was NOT revoked (your organisation chose alerts only): revoke or rotate it now."
                if data["action"] == "alerted"
                else "It was already revoked."
            )
            + "\n"
        )
        transaction.on_commit(
            lambda: send_mail(subject, body, None, recipients, fail_silently=True)  # noqa: B023 - once per call
        )


@transaction.atomic
def tenant_set_leak_response(
    *, tenant: Tenant, leak_response: str, actor: Actor = None, ip_address: str | None = None
) -> Tenant:
    """Choose what a leak report does to this tenant's secrets: `revoke` (the default) or `alert`."""
    if leak_response not in ("revoke", "alert"):
        raise ValidationError({"leak_response": ["Choose revoke or alert."]})
    if tenant.leak_response != leak_response:
        # update_quietly: no policy the proxy reads changes
        Tenant.objects.filter(pk=tenant.pk).update_quietly(leak_response=leak_response)
        tenant.leak_response = leak_response
        audit_record(
            action="tenant.leak_response_changed",
            tenant=tenant,
            actor=actor,
            ip_address=ip_address,
            data={"leak_response": leak_response},
        )
    return tenant
