"""GitHub secret-scanning reports over HTTP, signed with a locally made P-256 key, and their effect on
the real proxy: a reported secret is revoked and the next proxied call with it answers 401."""

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import override_settings

from keys import crypto, services
from keys.models import AuditEvent, ManagementToken
from proxy.tests.relay_helpers import error_code

pytestmark = pytest.mark.django_db(transaction=True)

KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"
PRIVATE = ec.generate_private_key(ec.SECP256R1())
PEM = (
    PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
KEYS_SETTING = override_settings(KEYS_SECRET_SCANNING_PUBLIC_KEYS=json.dumps({KEY_ID: PEM}))


def report(site, pool, items, *, private=PRIVATE, key_id=KEY_ID, body=None):
    body = body if body is not None else json.dumps(items).encode()
    signature = base64.b64encode(private.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    return pool.request(
        "POST",
        f"{site.url}/api/v1/secret-scanning/github",
        body=body,
        headers={
            "Content-Type": "application/json",
            "GITHUB-PUBLIC-KEY-IDENTIFIER": key_id,
            "GITHUB-PUBLIC-KEY-SIGNATURE": signature,
        },
    )


LEAK_URL = "https://github.com/someone/app/blob/abc123/.env"


@KEYS_SETTING
def test_signed_leak_report_revokes_the_key_and_the_next_proxied_call_answers_401(
    site, pool, proxy, make_key
):
    key, secret = make_key(secret_required=True)
    assert proxy(key, secret=secret).status == 200

    answer = report(
        site, pool, [{"token": secret, "type": "keyportal_key_secret", "url": LEAK_URL, "source": "content"}]
    )

    assert answer.status == 200, answer.data
    assert json.loads(answer.data) == [
        {"token_raw": secret, "token_type": "keyportal_key_secret", "label": "true_positive"}
    ]
    refused = proxy(key, secret=secret)
    assert refused.status == 401 and error_code(refused) == "key_revoked"
    event = AuditEvent.objects.get(action="secret.leaked")
    assert (
        event.target_id == key.key_id and event.data["url"] == LEAK_URL and event.data["action"] == "revoked"
    )
    assert AuditEvent.objects.filter(action="api_key.revoked", actor_label="GitHub secret scanning").exists()


@KEYS_SETTING
def test_a_tenant_that_chose_alerts_keeps_its_key_working(site, pool, proxy, make_key, tenant):
    tenant.leak_response = "alert"
    tenant.save()
    key, secret = make_key(secret_required=True)
    answer = report(site, pool, [{"token": secret, "type": "t", "url": LEAK_URL, "source": "content"}])
    assert json.loads(answer.data)[0]["label"] == "true_positive"
    assert proxy(key, secret=secret).status == 200
    assert AuditEvent.objects.get(action="secret.leaked").data["action"] == "alerted"


@KEYS_SETTING
def test_management_tokens_are_revoked_and_strangers_tokens_are_false_positives(site, pool, tenant):
    token, clear = services.management_token_create(tenant=tenant, actor="test")
    unknown = crypto.new_secret()
    mistyped = clear[:-1] + ("A" if clear[-1] != "A" else "B")
    answer = report(
        site,
        pool,
        [
            {"token": clear, "type": "x", "url": LEAK_URL, "source": "content"},
            {"token": unknown, "type": "x", "url": LEAK_URL, "source": "content"},
            {"token": mistyped, "type": "x", "url": LEAK_URL, "source": "content"},
        ],
    )
    labels = [item["label"] for item in json.loads(answer.data)]
    assert labels == ["true_positive", "false_positive", "false_positive"]
    assert ManagementToken.objects.get(pk=token.pk).revoked_at is not None


@KEYS_SETTING
@pytest.mark.parametrize(
    "tamper",
    ["other key", "unknown id", "changed body", "no signature"],
)
def test_reports_not_signed_by_the_configured_key_are_refused_and_change_nothing(
    site, pool, proxy, make_key, tamper
):
    key, secret = make_key(secret_required=True)
    items = [{"token": secret, "type": "x", "url": LEAK_URL, "source": "content"}]
    body = json.dumps(items).encode()
    if tamper == "other key":
        answer = report(site, pool, items, private=ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "unknown id":
        answer = report(site, pool, items, key_id="nope")
    elif tamper == "changed body":
        signature = base64.b64encode(PRIVATE.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
        answer = pool.request(
            "POST",
            f"{site.url}/api/v1/secret-scanning/github",
            body=body + b" ",
            headers={"GITHUB-PUBLIC-KEY-IDENTIFIER": KEY_ID, "GITHUB-PUBLIC-KEY-SIGNATURE": signature},
        )
    else:
        answer = pool.request("POST", f"{site.url}/api/v1/secret-scanning/github", body=body)
    assert answer.status == 401 and error_code(answer) == "not_authenticated"
    assert proxy(key, secret=secret).status == 200


@KEYS_SETTING
@pytest.mark.parametrize("body", [b"{}", b"not json", b"[1]", b'[{"token": 5}]'])
def test_signed_nonsense_is_400(site, pool, body):
    answer = report(site, pool, None, body=body)
    assert answer.status == 400 and error_code(answer) == "invalid_request"
