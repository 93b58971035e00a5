"""Every management-API error in the contract's error body (DESIGN.md "Error body").

DRF's and Django's exceptions, the services' ValidationErrors and the API's own ApiError all end here
(REST_FRAMEWORK["EXCEPTION_HANDLER"]); keys.errors.error_payload writes the body.
"""

import logging
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError
from django.http import Http404, HttpRequest
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import set_rollback

from keys.errors import ERROR_STATUS, error_payload
from keys.request_ids import request_id

logger = logging.getLogger(__name__)

# Seconds a caller is told to wait when the database does not answer (a restart or a failover).
SERVICE_UNAVAILABLE_RETRY_AFTER = 5


class ApiError(exceptions.APIException):
    """An answer with one of the contract's codes, e.g. ApiError("key_revoked", "pk_… has been revoked.")."""

    def __init__(
        self, code: str, message: str, retry_after: int | None = None, auth_header: str | None = None
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = ERROR_STATUS[code]
        self.error_code = code
        self.retry_after = retry_after
        self.auth_header = auth_header


def _texts(detail: object) -> object:
    """DRF's ErrorDetail tree as plain JSON: dicts of lists of strings (nested for nested fields)."""
    if isinstance(detail, dict):
        return {str(name): _texts(value) for name, value in detail.items()}
    if isinstance(detail, list | tuple):
        return [_texts(item) for item in detail]
    return str(detail)


def fields_of(exc: exceptions.ValidationError | DjangoValidationError) -> dict:
    """{"field": ["message", …]}; errors about the whole body go under "non_field_errors"."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            fields = {name: list(messages) for name, messages in exc.message_dict.items()}
        else:
            fields = {"non_field_errors": list(exc.messages)}
        if "__all__" in fields:
            fields["non_field_errors"] = fields.pop("__all__")
        return fields
    detail = _texts(exc.detail)
    return detail if isinstance(detail, dict) else {"non_field_errors": detail}


def _summary(fields: dict) -> str:
    if list(fields) == ["non_field_errors"]:  # about the request as a whole: its own words say it best
        return " ".join(str(message) for message in fields["non_field_errors"])
    names = ", ".join(sorted(fields))
    return f"The request is not valid ({names})." if names else "The request is not valid."


def _classify(exc: Exception) -> tuple[str, str, dict | None]:
    """(code, message, fields) of an exception the API answers; KeyError for one it does not know."""
    if isinstance(exc, ApiError):
        return exc.error_code, str(exc.detail), None
    if isinstance(exc, exceptions.ValidationError | DjangoValidationError):
        fields = fields_of(exc)
        return "invalid_request", _summary(fields), fields
    if isinstance(exc, exceptions.ParseError):
        return "invalid_request", str(exc.detail), None
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "not_authenticated", str(exc.detail), None
    if isinstance(exc, Ratelimited):  # a PermissionDenied subclass: test it first
        return "rate_limited", "Too many requests; retry later.", None
    if isinstance(exc, exceptions.PermissionDenied | DjangoPermissionDenied):
        detail = getattr(exc, "detail", None) or "You may not do this."
        return "permission_denied", str(detail), None
    if isinstance(exc, exceptions.NotFound | Http404 | ObjectDoesNotExist):
        return "not_found", "Not found.", None
    if isinstance(exc, exceptions.MethodNotAllowed):
        return "method_not_allowed", str(exc.detail), None
    if isinstance(exc, exceptions.NotAcceptable):
        return "not_acceptable", str(exc.detail), None
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return "unsupported_media_type", str(exc.detail), None
    if isinstance(exc, exceptions.Throttled):
        return "rate_limited", "Too many requests; retry later.", None
    if isinstance(exc, DatabaseError):  # OperationalError, InterfaceError…: the database is unreachable
        return "service_unavailable", "The service is briefly unavailable; retry in a few seconds.", None
    raise KeyError(type(exc).__name__)


def error_response(
    request: Request | HttpRequest,
    code: str,
    message: str,
    fields: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The contract's error body with the status of its code."""
    return Response(
        # The id lives on the Django request (keys.middleware chose it); DRF's Request wraps that one.
        error_payload(code, message, request_id(_http_request(request)), fields),
        status=ERROR_STATUS[code],
        headers=headers,
        content_type="application/json",
    )


def _http_request(request: Request | HttpRequest) -> HttpRequest:
    return request._request if isinstance(request, Request) else request


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every error, expected or not, as the contract's error body."""
    request = context["request"]
    set_rollback()
    try:
        code, message, fields = _classify(exc)
    except KeyError:
        logger.exception("api: unexpected error")
        return error_response(request, "internal_error", "Something went wrong on our side.")
    if code == "service_unavailable":
        # Logged (the exception names no secret), never shown: the caller only learns to retry.
        logger.error("api: database unavailable: %s", type(exc).__name__, exc_info=True)
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header and ERROR_STATUS[code] == 401:
        headers["WWW-Authenticate"] = auth_header
    retry_after = getattr(exc, "retry_after", None) or getattr(exc, "wait", None)
    if code == "rate_limited":
        headers["Retry-After"] = str(max(1, int(retry_after or 1)))
    if code == "service_unavailable":
        headers["Retry-After"] = str(SERVICE_UNAVAILABLE_RETRY_AFTER)
    if code == "method_not_allowed" and context.get("view") is not None:
        headers["Allow"] = ", ".join(context["view"].allowed_methods)
    return error_response(request, code, message, fields, headers)
