"""OpenAPI details drf-spectacular cannot guess: the authenticators' security schemes and the error
answers every operation may give, in the contract's error body."""

from typing import Any, Literal

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object

from keys.api.serializers import ErrorSerializer

ERROR_DESCRIPTIONS = {
    "400": "invalid_request: the body or a parameter is not valid (see error.fields).",
    "401": "not_authenticated, or for the token exchange a key or token code (invalid_key, key_revoked…).",
    "403": "permission_denied (role), tenant_suspended.",
    "404": "not_found: no such object for this tenant (another tenant's objects answer 404 too).",
    "405": "method_not_allowed.",
    "406": "not_acceptable: the API answers application/json.",
    "413": "payload_too_large.",
    "415": "unsupported_media_type: send application/json.",
}


class ErrorAwareAutoSchema(AutoSchema):
    """Adds the contract's error answers to every operation, besides the ones it documents itself."""

    def _get_response_bodies(self, direction: Literal["request", "response"] = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for status, description in ERROR_DESCRIPTIONS.items():
            if status not in responses:
                response = self._get_response_for_code(ErrorSerializer, status, direction=direction)
                responses[status] = {**response, "description": description}
        return responses


class ManagementTokenScheme(OpenApiAuthenticationExtension):
    target_class = "keys.api.authentication.ManagementTokenAuthentication"
    name = "managementToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        scheme = build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix="Bearer",  # noqa: S106 - an auth scheme's name, not a password
        )
        return {**scheme, "description": "A tenant's management token, mt_…; acts as an admin of it."}


class TenantSessionScheme(OpenApiAuthenticationExtension):
    target_class = "keys.api.authentication.TenantSessionAuthentication"
    name = "portalSession"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "A signed-in portal session; unsafe methods need the X-CSRFToken header.",
        }
