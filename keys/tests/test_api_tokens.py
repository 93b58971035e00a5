"""The token exchange (DESIGN.md "Token exchange"): POST and DELETE /api/v1/tokens."""

import logging
import random
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from keys import selectors, services
from keys.models import ApiKey
from keys.tests.api_helpers import basic, error_of

URL = "/api/v1/tokens"


@pytest.fixture(autouse=True)
def generous_exchange_limits(settings):
    """The whole run exchanges from 127.0.0.1; only the rate-limit tests set low limits."""
    settings.KEYS_TOKEN_EXCHANGE_RATE = "100000/m"
    settings.KEYS_TOKEN_EXCHANGE_IP_RATE = "100000/m"


@pytest.fixture
def key_with_origins(tenant, loopback_upstream):
    return services.api_key_create(
        tenant=tenant,
        name="browser",
        upstreams=[loopback_upstream],
        allowed_origins=["https://app.example.com", "*.example.com"],
        actor="test",
    )


def exchange(
    api_key: ApiKey, secret: str, body: object = None, *, client: APIClient | None = None, **extra: Any
):
    client = client or APIClient()
    return client.post(URL, body, format="json", HTTP_AUTHORIZATION=basic(api_key.key_id, secret), **extra)


def test_exchange_answers_201_with_a_bearer_token_for_the_key(api_key_and_secret: tuple[ApiKey, str]):
    api_key, secret = api_key_and_secret
    response = exchange(api_key, secret)
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"token", "token_type", "key", "expires_in", "expires_at"}
    assert body["token_type"] == "Bearer" and body["key"] == api_key.key_id and body["expires_in"] == 900
    assert body["expires_at"].endswith("Z")
    token, error = selectors.access_token_verify(token=body["token"])
    assert token is not None
    assert error is None and token.api_key == api_key
    assert abs((token.expires_at - timezone.now()).total_seconds() - 900) < 5


@pytest.mark.parametrize("ttl", [1, 60, 86400])
def test_exchange_accepts_ttl_within_bounds(api_key_and_secret: tuple[ApiKey, str], ttl):
    body = exchange(*api_key_and_secret, {"ttl": ttl}).json()
    assert body["expires_in"] == ttl


def test_exchange_ttl_bound_follows_the_setting(api_key_and_secret: tuple[ApiKey, str], settings):
    settings.KEYS_TOKEN_MAX_TTL = 600
    error_of(exchange(*api_key_and_secret, {"ttl": 601}), 400, "invalid_request")
    assert exchange(*api_key_and_secret, {"ttl": 600}).status_code == 201


BAD_TTLS = [-5, 0, 86401, "soon", "900", 1.5, 900.0, True, None, [900], {"s": 1}, 10**30]


@pytest.mark.parametrize("ttl", BAD_TTLS)
def test_exchange_refuses_bad_ttl_with_400_naming_it(api_key_and_secret: tuple[ApiKey, str], ttl):
    error = error_of(exchange(*api_key_and_secret, {"ttl": ttl}), 400, "invalid_request")
    assert list(error["fields"]) == ["ttl"]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"ttl=900", "application/x-www-form-urlencoded"),
        (b"not json", "application/json"),
        (b'{"ttl": 900', "application/json"),
        (b'{"ttl": NaN}', "application/json"),
        (b'{"ttl": Infinity}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[900]", "application/json"),
        (b'"ttl"', "application/json"),
        (b"900", "text/plain"),
        (b'{"ttl": 900, "scope": "all"}', "application/json"),
        (b'{"ttl": 900, "key": "pk_other"}', "application/json"),
    ],
)
def test_exchange_refuses_bodies_that_are_not_a_json_request_with_400(
    api_key_and_secret: tuple[ApiKey, str], body, content_type
):
    api_key, secret = api_key_and_secret
    response = APIClient().generic(
        "POST", URL, body, content_type, HTTP_AUTHORIZATION=basic(api_key.key_id, secret)
    )
    error_of(response, 400, "invalid_request")


def test_exchange_with_empty_body_uses_the_defaults(api_key_and_secret: tuple[ApiKey, str]):
    api_key, secret = api_key_and_secret
    response = APIClient().generic("POST", URL, "", HTTP_AUTHORIZATION=basic(api_key.key_id, secret))
    assert response.status_code == 201 and response.json()["expires_in"] == 900


@pytest.mark.parametrize(
    "origins", [["https://app.example.com"], ["https://shop.example.com"], ["*.example.com"], []]
)
def test_token_origins_may_narrow_the_keys(key_with_origins: tuple[ApiKey, str], origins):
    response = exchange(*key_with_origins, {"allowed_origins": origins})
    assert response.status_code == 201, response.content
    token, _ = selectors.access_token_verify(token=response.json()["token"])
    assert token is not None
    assert token.allowed_origins == origins


@pytest.mark.parametrize(
    "origins",
    [
        ["https://evil.test"],
        ["https://app.example.com", "https://evil.test"],
        ["example.com"],
        ["http://app.example.com:8080"],
        ["*.com"],
        ["not an origin"],
        "https://app.example.com",
        [None],
    ],
)
def test_token_origins_may_not_widen_the_keys(key_with_origins: tuple[ApiKey, str], origins):
    error = error_of(exchange(*key_with_origins, {"allowed_origins": origins}), 400, "invalid_request")
    assert list(error["fields"]) == ["allowed_origins"]


def test_exchange_without_credentials_is_401_asking_for_basic(db):
    response = APIClient().post(URL, {}, format="json")
    error_of(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    "authorization, code",
    [
        ("Basic !!!not-base64", "invalid_secret"),
        ("Basic " + "bm9jb2xvbg==", "invalid_key"),  # "nocolon"
        ("Bearer at_whatever", "not_authenticated"),
    ],
)
def test_exchange_with_malformed_credentials_is_401(db, authorization, code):
    error_of(APIClient().post(URL, {}, format="json", HTTP_AUTHORIZATION=authorization), 401, code)


def test_exchange_with_unknown_key_is_401_invalid_key(db):
    response = APIClient().post(
        URL, {}, format="json", HTTP_AUTHORIZATION=basic("pk_" + "a" * 30, "sk_" + "b" * 38)
    )
    error_of(response, 401, "invalid_key")


def test_exchange_with_wrong_secret_is_401_and_never_echoes_it(api_key, caplog):
    wrong = "sk_" + "x" * 38
    with caplog.at_level(logging.DEBUG):
        response = exchange(api_key, wrong)
    error_of(response, 401, "invalid_secret")
    assert wrong not in response.content.decode() and wrong not in caplog.text


def test_exchange_for_revoked_expired_or_suspended_key_answers_the_proxys_codes(
    api_key_and_secret: tuple[ApiKey, str], tenant
):
    api_key, secret = api_key_and_secret
    services.api_key_update(api_key=api_key, expires_at=timezone.now() - timedelta(seconds=1), actor="test")
    error_of(exchange(api_key, secret), 401, "key_expired")
    services.api_key_revoke(api_key=api_key, actor="test")
    error_of(exchange(api_key, secret), 401, "key_revoked")
    services.tenant_set_active(tenant=tenant, is_active=False, actor="test")
    error_of(exchange(api_key, secret), 403, "tenant_suspended")


def test_old_secret_exchanges_during_rotation_grace_only(api_key_and_secret: tuple[ApiKey, str]):
    api_key, old = api_key_and_secret
    services.api_key_rotate(api_key=api_key, grace=timedelta(hours=1), actor="test")
    assert exchange(api_key, old).status_code == 201
    services.api_key_rotate(api_key=api_key, grace=timedelta(0), actor="test")
    error_of(exchange(api_key, old), 401, "invalid_secret")


def _address() -> str:
    return f"198.51.100.{random.randrange(1, 250)}"  # noqa: S311 - apart from other runs' counters


WRONG = "sk_" + "x" * 38


def test_thirty_wrong_secrets_never_lock_out_the_owners_right_secret(
    api_key_and_secret: tuple[ApiKey, str], settings
):
    settings.KEYS_TOKEN_EXCHANGE_RATE, settings.KEYS_TOKEN_EXCHANGE_IP_RATE = "30/m", "60/m"  # the defaults
    api_key, secret = api_key_and_secret
    guesser = _address()
    for _ in range(30):
        error_of(exchange(api_key, WRONG, REMOTE_ADDR=guesser), 401, "invalid_secret")
    for _ in range(5):  # the guesser keeps being refused past the limit
        response = exchange(api_key, WRONG, REMOTE_ADDR=guesser)
        error_of(response, 429, "rate_limited")
        assert 1 <= int(response["Retry-After"]) <= 60
    assert exchange(api_key, secret, REMOTE_ADDR="192.0.2.10").status_code == 201


def test_past_the_failure_limit_the_guesser_is_refused_even_a_right_guess(
    api_key_and_secret: tuple[ApiKey, str], settings
):
    settings.KEYS_TOKEN_EXCHANGE_RATE = "3/m"
    api_key, secret = api_key_and_secret
    guesser = _address()
    for _ in range(3):
        error_of(exchange(api_key, WRONG, REMOTE_ADDR=guesser), 401, "invalid_secret")
    error_of(exchange(api_key, secret, REMOTE_ADDR=guesser), 429, "rate_limited")


def test_successful_exchanges_are_not_counted_as_failures(api_key_and_secret: tuple[ApiKey, str], settings):
    settings.KEYS_TOKEN_EXCHANGE_RATE = "3/m"
    api_key, secret = api_key_and_secret
    owner = _address()
    for _ in range(10):
        assert exchange(api_key, secret, REMOTE_ADDR=owner).status_code == 201
    for _ in range(3):
        error_of(exchange(api_key, WRONG, REMOTE_ADDR=owner), 401, "invalid_secret")
    error_of(exchange(api_key, WRONG, REMOTE_ADDR=owner), 429, "rate_limited")


def test_exchange_is_rate_limited_per_client_address(tenant, settings):
    settings.KEYS_TOKEN_EXCHANGE_IP_RATE = "3/m"
    address = f"203.0.113.{random.randrange(1, 250)}"  # noqa: S311
    keys = [services.api_key_create(tenant=tenant, name=f"k{i}", actor="test") for i in range(4)]
    for api_key, secret in keys[:3]:
        assert exchange(api_key, secret, REMOTE_ADDR=address).status_code == 201
    error_of(exchange(*keys[3], REMOTE_ADDR=address), 429, "rate_limited")
    assert exchange(*keys[3], REMOTE_ADDR="192.0.2.77").status_code == 201


def revoke(token: str | None = None, authorization: str | None = None):
    header = authorization if authorization is not None else f"Bearer {token}"
    return APIClient().delete(URL, HTTP_AUTHORIZATION=header)


def test_delete_revokes_the_presented_token_at_once(api_key_and_secret: tuple[ApiKey, str]):
    token = exchange(*api_key_and_secret).json()["token"]
    assert revoke(token).status_code == 204
    assert selectors.access_token_verify(token=token)[1] == "invalid_token"
    error_of(revoke(token), 401, "invalid_token")


@pytest.mark.parametrize(
    "authorization", ["", "Bearer ", "Bearer at_" + "a" * 38, "Bearer not-a-token", "Basic Zm9vOmJhcg=="]
)
def test_delete_with_unknown_token_is_401_invalid_token(db, authorization):
    error_of(revoke(authorization=authorization), 401, "invalid_token")


def test_delete_cannot_revoke_with_a_key_secret_or_management_token(
    api_key_and_secret: tuple[ApiKey, str], management_token
):
    error_of(revoke(api_key_and_secret[1]), 401, "invalid_token")
    error_of(revoke(management_token), 401, "invalid_token")
