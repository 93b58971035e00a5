"""The OpenAPI schema and docs: every route is in the schema, and the API answers as the schema says
(schemathesis, in process, against the site's WSGI application)."""

import pytest
import schemathesis
from django.contrib.staticfiles import finders
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keys import services

OPERATIONS = {
    ("/api/v1/tenant", "get"),
    ("/api/v1/keys", "get"),
    ("/api/v1/keys", "post"),
    ("/api/v1/keys/{id}", "get"),
    ("/api/v1/keys/{id}", "patch"),
    ("/api/v1/keys/{id}", "delete"),
    ("/api/v1/keys/{id}/rotate", "post"),
    ("/api/v1/keys/{id}/usage", "get"),
    ("/api/v1/upstreams", "get"),
    ("/api/v1/upstreams", "post"),
    ("/api/v1/upstreams/{slug}", "get"),
    ("/api/v1/upstreams/{slug}", "patch"),
    ("/api/v1/upstreams/{slug}", "delete"),
    ("/api/v1/management-tokens", "get"),
    ("/api/v1/management-tokens", "post"),
    ("/api/v1/management-tokens/{id}", "get"),
    ("/api/v1/management-tokens/{id}", "delete"),
    ("/api/v1/members", "get"),
    ("/api/v1/members", "post"),
    ("/api/v1/members/{id}", "get"),
    ("/api/v1/members/{id}", "patch"),
    ("/api/v1/members/{id}", "delete"),
    ("/api/v1/tokens", "post"),
    ("/api/v1/tokens", "delete"),
    ("/api/v1/webhooks", "get"),
    ("/api/v1/webhooks", "post"),
    ("/api/v1/webhooks/{id}", "get"),
    ("/api/v1/webhooks/{id}", "delete"),
    ("/api/v1/webhooks/{id}/test", "post"),
    ("/api/v1/webhooks/{id}/enable", "post"),
    ("/api/v1/webhooks/{id}/deliveries", "get"),
    ("/api/v1/alerts", "get"),
    ("/api/v1/alerts", "post"),
    ("/api/v1/alerts/{id}", "get"),
    ("/api/v1/alerts/{id}", "delete"),
    ("/api/v1/secret-scanning/github", "post"),
}
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
# Examples per operation: enough to find a 500, bounded so the whole run stays well under a minute.
EXAMPLES = 12


@pytest.fixture
def schema_json(db):
    response = APIClient().get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_schema_is_valid_openapi_3_with_every_route(schema_json):
    validate_schema(schema_json)
    assert schema_json["openapi"].startswith("3.")
    operations = {
        (path, method)
        for path, item in schema_json["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert operations == OPERATIONS


def test_every_operation_documents_the_error_body(schema_json):
    for path, item in schema_json["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for status in ("400", "401", "404"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_secrets_are_documented_only_where_they_are_answered(schema_json):
    components = schema_json["components"]["schemas"]
    assert "secret" in components["KeyWithSecret"]["properties"]
    assert "secret" not in components["Key"]["properties"]
    assert "token" in components["ManagementTokenCreated"]["properties"]
    assert "value" not in components["UpstreamAuth"]["properties"]
    assert "value" in components["UpstreamAuthRequest"]["properties"]


def test_schema_documents_the_tenant_header_and_the_security_schemes(schema_json):
    assert "X-Tenant" in schema_json["info"]["description"]
    schemes = schema_json["components"]["securitySchemes"]
    assert {"managementToken", "portalSession", "keyBasic", "accessToken"} <= set(schemes)
    keys_list = schema_json["paths"]["/api/v1/keys"]["get"]
    assert {"managementToken": []} in keys_list["security"]
    assert any(p["name"] == "X-Tenant" and p["in"] == "header" for p in keys_list["parameters"])


def test_docs_page_is_served_with_local_assets(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page and "/api/schema/" in page and "cdn.jsdelivr" not in page
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def test_schema_is_public_yaml_by_default(db):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200 and b"openapi: 3" in response.content


@pytest.fixture
def wsgi_app():
    """The site's Django WSGI application (the API needs none of config.wsgi's proxy fast path). As
    Django's test client does, it keeps the database connection between requests: closing it would
    end the test's transaction."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def check_operation(operation, headers: dict[str, str]) -> None:
    """Run EXAMPLES generated cases of one operation, each called and checked against the schema."""

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    conforms()


def test_api_answers_as_its_schema_says(db, tenant, loopback_upstream, management_token, wsgi_app, settings):
    """schemathesis against every operation, authenticated with a management token: no 500, and every
    status, content type and body as documented."""
    settings.KEYS_TOKEN_EXCHANGE_RATE = settings.KEYS_TOKEN_EXCHANGE_IP_RATE = "100000/m"
    services.api_key_create(tenant=tenant, name="existing", upstreams=[loopback_upstream], actor="test")
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    headers = {"Authorization": f"Bearer {management_token}"}
    seen = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)  # every operation of the schema loads
        operation = result.ok()
        seen.add((operation.path, operation.method.lower()))
        if (operation.path, operation.method.lower()) == ("/api/v1/management-tokens/{id}", "delete"):
            continue  # revoking the token under test would only turn every later case into a 401
        check_operation(operation, headers)
    assert seen == OPERATIONS
