"""/api/v1/webhooks, /api/v1/alerts and /api/v1/secret-scanning/github: thin views over
keys.services.webhooks, keys.services.alerts and keys.services.leaks."""

from typing import Any

from django.contrib.auth.models import User
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keys.alert_models import AlertEvent, AlertRule, WebhookDelivery, WebhookEndpoint
from keys.api.errors import ApiError
from keys.api.views import TENANT_HEADER, Pagination, TenantScoped
from keys.client_address import client_address
from keys.models import ApiKey, Role
from keys.services import alerts as alert_services
from keys.services import leaks
from keys.services import webhooks as webhook_services
from keys.shown_once import SHOWN_ONCE_HEADERS

ID = OpenApiParameter("id", int, OpenApiParameter.PATH)


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "events",
            "description",
            "hint",
            "is_active",
            "disabled_at",
            "disabled_reason",
            "created_at",
        ]


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.SerializerMethodField()

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]

    @extend_schema_field(OpenApiTypes.STR)
    def get_secret(self, endpoint: WebhookEndpoint) -> str:
        return self.context["secret"]


class WebhookCreateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    events = serializers.ListField(child=serializers.CharField(max_length=60), max_length=50, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "attempt_log",
        ]


def _refuse_unknown(data: Any, allowed: set[str]) -> None:
    if isinstance(data, dict):
        unknown = set(data) - allowed
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in sorted(unknown)})


@extend_schema(tags=["webhooks"], parameters=[TENANT_HEADER])
class WebhookViewSet(TenantScoped, viewsets.ViewSet):
    """Webhook endpoints: admins and owners manage them and read their deliveries."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = Pagination

    def get_endpoint(self) -> WebhookEndpoint:
        try:
            return WebhookEndpoint.objects.get(tenant=self.access.tenant, pk=int(self.kwargs["id"]))
        except WebhookEndpoint.DoesNotExist as exc:
            raise NotFound from exc

    @extend_schema(responses=WebhookSerializer(many=True), summary="List webhook endpoints")
    def list(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            WebhookEndpoint.objects.filter(tenant=self.access.tenant).order_by("-created_at", "-pk"),
            request,
            view=self,
        )
        return paginator.get_paginated_response(WebhookSerializer(page, many=True).data)

    @extend_schema(
        request=WebhookCreateSerializer,
        responses={201: WebhookCreatedSerializer},
        summary="Add a webhook endpoint (the answer holds its signing secret, once)",
    )
    def create(self, request: Request) -> Response:
        _refuse_unknown(request.data, {"url", "events", "description"})
        fields = self.valid(WebhookCreateSerializer, request.data)
        endpoint, secret = webhook_services.webhook_endpoint_create(
            tenant=self.access.tenant, actor=self.access.actor, ip_address=client_address(request), **fields
        )
        data = WebhookCreatedSerializer(endpoint, context={"secret": secret}).data
        return Response(data, status=status.HTTP_201_CREATED, headers=SHOWN_ONCE_HEADERS)

    @extend_schema(parameters=[ID], responses=WebhookSerializer, summary="Read a webhook endpoint")
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(WebhookSerializer(self.get_endpoint()).data)

    @extend_schema(
        parameters=[ID],
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete a webhook endpoint",
    )
    def destroy(self, request: Request, id: str) -> Response:
        webhook_services.webhook_endpoint_delete(
            endpoint=self.get_endpoint(), actor=self.access.actor, ip_address=client_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[ID],
        request=None,
        responses={202: DeliverySerializer},
        summary="Send a test event to the endpoint",
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, id: str) -> Response:
        delivery = webhook_services.webhook_endpoint_test(endpoint=self.get_endpoint())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[ID], request=None, responses=WebhookSerializer, summary="Enable a disabled endpoint again"
    )
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, id: str) -> Response:
        endpoint = webhook_services.webhook_endpoint_enable(
            endpoint=self.get_endpoint(), actor=self.access.actor, ip_address=client_address(request)
        )
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(
        parameters=[ID],
        responses=DeliverySerializer(many=True),
        summary="The endpoint's deliveries, newest first, with each attempt's answer",
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, id: str) -> Response:
        paginator = self.pagination_class()
        rows = WebhookDelivery.objects.filter(endpoint=self.get_endpoint()).order_by("-created_at", "-pk")
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)


class AlertRuleSerializer(serializers.ModelSerializer):
    key = serializers.SerializerMethodField()
    recipients = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "event",
            "key",
            "levels",
            "threshold",
            "window_hours",
            "min_calls",
            "days",
            "renotify_minutes",
            "send_webhooks",
            "recipients",
            "is_active",
            "created_at",
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_key(self, rule: AlertRule) -> str | None:
        return rule.api_key.key_id if rule.api_key else None

    @extend_schema_field(serializers.ListField(child=serializers.EmailField()))
    def get_recipients(self, rule: AlertRule) -> list[str]:
        return sorted(user.email for user in rule.email_recipients.all())


class AlertRuleCreateSerializer(serializers.Serializer):
    event = serializers.ChoiceField(choices=[c for c in AlertEvent.values if c != AlertEvent.KEY_LEAKED])
    key = serializers.CharField(max_length=64, required=False, allow_null=True, default=None)
    levels = serializers.ListField(child=serializers.IntegerField(), max_length=3, required=False)
    threshold = serializers.IntegerField(required=False)
    window_hours = serializers.IntegerField(required=False)
    min_calls = serializers.IntegerField(required=False)
    days = serializers.IntegerField(required=False)
    renotify_minutes = serializers.IntegerField(required=False)
    send_webhooks = serializers.BooleanField(required=False)
    recipients = serializers.ListField(child=serializers.EmailField(), max_length=100, required=False)


@extend_schema(tags=["alerts"], parameters=[TENANT_HEADER])
class AlertRuleViewSet(TenantScoped, viewsets.ViewSet):
    """Alert rules: every member reads them, admins and owners manage them."""

    write_role = Role.ADMIN
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = Pagination

    def get_rule(self) -> AlertRule:
        try:
            return AlertRule.objects.get(tenant=self.access.tenant, pk=int(self.kwargs["id"]))
        except AlertRule.DoesNotExist as exc:
            raise NotFound from exc

    @extend_schema(responses=AlertRuleSerializer(many=True), summary="List alert rules")
    def list(self, request: Request) -> Response:
        paginator = self.pagination_class()
        rows = (
            AlertRule.objects.filter(tenant=self.access.tenant)
            .select_related("api_key")
            .prefetch_related("email_recipients")
            .order_by("-created_at", "-pk")
        )
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(AlertRuleSerializer(page, many=True).data)

    @extend_schema(
        request=AlertRuleCreateSerializer, responses={201: AlertRuleSerializer}, summary="Add an alert rule"
    )
    def create(self, request: Request) -> Response:
        _refuse_unknown(request.data, set(AlertRuleCreateSerializer().fields))
        fields = self.valid(AlertRuleCreateSerializer, request.data)
        tenant = self.access.tenant
        key_id = fields.pop("key", None)
        api_key = None
        if key_id is not None:
            api_key = ApiKey.objects.filter(tenant=tenant, key_id=key_id).first()
            if api_key is None:
                raise serializers.ValidationError({"key": ["Unknown key."]})
        emails = fields.pop("recipients", [])
        users = list(User.objects.filter(memberships__tenant=tenant, email__in=emails))
        if len({u.email.lower() for u in users}) < len({e.lower() for e in emails}):
            raise serializers.ValidationError({"recipients": ["Every recipient must be a member."]})
        rule = alert_services.alert_rule_create(
            tenant=tenant,
            api_key=api_key,
            recipients=users,
            actor=self.access.actor,
            ip_address=client_address(request),
            **fields,
        )
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[ID], responses=AlertRuleSerializer, summary="Read an alert rule")
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(AlertRuleSerializer(self.get_rule()).data)

    @extend_schema(
        parameters=[ID],
        responses={204: OpenApiResponse(description="Deleted.")},
        summary="Delete an alert rule",
    )
    def destroy(self, request: Request, id: str) -> Response:
        alert_services.alert_rule_delete(
            rule=self.get_rule(), actor=self.access.actor, ip_address=client_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class LeakLabelSerializer(serializers.Serializer):
    token_raw = serializers.CharField()
    token_type = serializers.CharField()
    label = serializers.ChoiceField(choices=["true_positive", "false_positive"])  # type: ignore[assignment]


class GitHubSecretScanningView(APIView):
    """GitHub's secret-scanning partner alerts: signed by GitHub, no other authentication."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        tags=["secret scanning"],
        auth=[],
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={200: LeakLabelSerializer(many=True)},
        summary="GitHub secret scanning: leaked secrets and tokens (revoked or alerted on)",
    )
    def post(self, request: Request) -> Response:
        body = request.body
        try:
            leaks.signature_verify(
                body=body,
                key_identifier=request.headers.get("Github-Public-Key-Identifier", ""),
                signature=request.headers.get("Github-Public-Key-Signature", ""),
            )
            reported = leaks.report_parse(body)
        except leaks.ReportRefused as exc:
            raise ApiError(exc.code, exc.message) from exc
        answer = leaks.leak_report_handle(reported=reported, ip_address=client_address(request))
        return Response(answer)
