"""The token exchange (DESIGN.md "Token exchange"): a key's id and secret in, a short-lived access token
out; and the revocation of a token by whoever holds it.

Limits (django-ratelimit, in the shared cache), each answering 429 `rate_limited` past it:
- every attempt, per client address (a generous ceiling);
- failed attempts, per key id *and* client address: a guesser is stopped, before any check, while the
  key's owner, calling from elsewhere with the right secret, is never refused by someone else's guesses.
"""

import base64
import binascii
import logging

from django.conf import settings
from django_ratelimit.core import get_usage
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keys import access, selectors, services
from keys.api import serializers as s
from keys.api.errors import ApiError
from keys.api.parsers import parse_json
from keys.client_address import client_address
from keys.shown_once import SHOWN_ONCE_HEADERS

logger = logging.getLogger(__name__)


def _limit(request: Request, *, scope: str, value: str, rate: str, increment: bool) -> None:
    """Raise 429 when `value` is past `rate` in its scope: counting this request (`increment`), or only
    reading the count (then the limit is reached at `rate`'s number). Fails open if the cache is down
    (as the proxy's limits do): secrets are too long to guess, availability matters more."""
    try:
        usage = get_usage(
            request,
            group=f"keys.api.token_exchange.{scope}",
            key=lambda group, request: value,
            rate=rate,
            increment=increment,
        )
    except Exception:  # noqa: BLE001 - any cache failure: serve, log
        logger.warning("token exchange: rate-limit counter unavailable, not limiting", exc_info=True)
        return
    if usage is None or usage["time_left"] < 0:  # disabled, or the counter could not be read
        return
    over = usage["should_limit"] if increment else usage["count"] >= usage["limit"]
    if over:
        raise ApiError(
            "rate_limited", "Too many token requests; retry later.", retry_after=usage["time_left"]
        )


def _basic_credentials(request: Request) -> tuple[str, str]:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise ApiError(
            "not_authenticated",
            "Send the key id and secret as Basic credentials (key_id:secret).",
            auth_header='Basic realm="api"',
        )
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ApiError("invalid_secret", "The Authorization header is not valid Basic credentials.") from exc
    key_id, _, secret = decoded.partition(":")
    return key_id, secret


class AccessTokenView(APIView):
    """POST exchanges a key's secret for an access token; DELETE revokes the token it presents."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["access tokens"],
        # Security requirement objects, which drf-spectacular takes (its get_auth returns them) though
        # extend_schema annotates `auth` as a list of names.
        auth=[{"keyBasic": []}],  # type: ignore[list-item]
        request=s.AccessTokenRequestSerializer,
        responses={
            201: s.AccessTokenSerializer,
            429: OpenApiResponse(s.ErrorSerializer, description="rate_limited, with Retry-After."),
        },
        summary="Exchange a key's id and secret for a short-lived access token",
    )
    def post(self, request: Request) -> Response:
        address = client_address(request)
        _limit(
            request, scope="address", value=address, rate=settings.KEYS_TOKEN_EXCHANGE_IP_RATE, increment=True
        )
        key_id, secret = _basic_credentials(request)
        # Failures from this address for this key: read before the check, so that past the limit even
        # a right guess is refused; counted only when the check fails.
        failures = {"scope": "failures", "value": f"{key_id[:64]} {address}"}
        _limit(request, **failures, rate=settings.KEYS_TOKEN_EXCHANGE_RATE, increment=False)
        api_key, refused = selectors.api_key_authenticate(key_id=key_id, secret=secret)
        if api_key is None or refused is not None:
            refused = refused or access.unknown_key(key_id)  # no key: the selector always says invalid_key
            _limit(request, **failures, rate=settings.KEYS_TOKEN_EXCHANGE_RATE, increment=True)
            raise ApiError(refused.code, refused.message)
        serializer = s.AccessTokenRequestSerializer(data=parse_json(request.body))
        serializer.is_valid(raise_exception=True)
        token, clear = services.access_token_issue(api_key=api_key, **serializer.validated_data)
        expires_in = round((token.expires_at - token.created_at).total_seconds())
        data = s.AccessTokenSerializer(
            {
                "token": clear,
                "token_type": "Bearer",
                "key": api_key.key_id,
                "expires_in": expires_in,
                "expires_at": token.expires_at,
            }
        ).data
        return Response(data, status=status.HTTP_201_CREATED, headers=SHOWN_ONCE_HEADERS)

    @extend_schema(
        tags=["access tokens"],
        auth=[{"accessToken": []}],  # type: ignore[list-item]  # as for post
        request=None,
        responses={204: OpenApiResponse(description="Revoked: the token is refused from now on.")},
        summary="Revoke the access token in the Authorization header",
    )
    def delete(self, request: Request) -> Response:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError("invalid_token", "Send the access token as Authorization: Bearer at_….")
        token, error = selectors.access_token_verify(token=value.strip())
        if token is None or error == "invalid_token":
            raise ApiError("invalid_token", "The bearer token is not a valid access token.")
        services.access_token_revoke(token=token, actor="access token holder")
        return Response(status=status.HTTP_204_NO_CONTENT)
