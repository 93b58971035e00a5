"""The management API's views: authenticate, scope to the caller's tenant, validate the shape, call
keys.services or keys.selectors, serialize. No rule lives here."""

from datetime import UTC, timedelta
from typing import Any, cast

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from keys import selectors, services, sharing
from keys.api import serializers as s
from keys.api.authentication import (
    ManagementTokenAuthentication,
    TenantAccess,
    TenantSessionAuthentication,
)
from keys.api.errors import ApiError
from keys.api.permissions import TenantRole
from keys.client_address import client_address
from keys.models import ApiKey, ManagementToken, Membership, Role, Upstream
from keys.shown_once import SHOWN_ONCE_HEADERS

# Answers holding a secret must not be kept by any cache.
TENANT_HEADER = OpenApiParameter(
    "X-Tenant",
    str,
    OpenApiParameter.HEADER,
    description="Session callers with several tenants: the tenant's slug (default: the first membership).",
)


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class TenantScoped(APIView):
    """Authentication, role permission and the tenant every query is scoped to."""

    authentication_classes = [ManagementTokenAuthentication, TenantSessionAuthentication]
    permission_classes = [TenantRole]
    read_role = Role.VIEWER
    write_role = Role.DEVELOPER

    @property
    def access(self) -> TenantAccess:
        # TenantRole lets through only a caller acting for a tenant: both authenticators leave a TenantAccess.
        return cast(TenantAccess, self.request.auth)

    def valid(
        self, serializer_class: type[serializers.Serializer[Any]], data: Any, **kwargs: Any
    ) -> dict[str, Any]:
        serializer = serializer_class(data=data, context={"tenant": self.access.tenant}, **kwargs)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


@extend_schema(tags=["tenant"], parameters=[TENANT_HEADER])
class TenantView(TenantScoped):
    @extend_schema(responses=s.TenantSerializer, summary="The tenant the caller acts for, and its role")
    def get(self, request: Request) -> Response:
        return Response(s.TenantSerializer(self.access).data)


@extend_schema(tags=["keys"], parameters=[TENANT_HEADER])
class KeyViewSet(TenantScoped, viewsets.ViewSet):
    """API keys: developers and above manage them; every member reads them."""

    lookup_url_kwarg = "id"
    # A key id's shape: any other text in the URL is no route (404) and never reaches a query
    # (PostgreSQL refuses a NUL in text, for one).
    lookup_value_regex = "pk_[0-9A-Za-z]{1,64}"
    pagination_class = Pagination

    def get_key(self) -> ApiKey:
        try:
            return selectors.api_key_get(tenant=self.access.tenant, key_id=self.kwargs["id"])
        except ApiKey.DoesNotExist as exc:
            raise NotFound from exc

    @extend_schema(
        parameters=[s.KeyFilterSerializer], responses=s.KeySerializer(many=True), summary="List keys"
    )
    def list(self, request: Request) -> Response:
        filters = self.valid(s.KeyFilterSerializer, request.query_params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.api_key_list(tenant=self.access.tenant, **filters), request, view=self
        )
        return paginator.get_paginated_response(s.KeySerializer(page, many=True).data)

    @extend_schema(
        request=s.KeyWriteSerializer,
        responses={201: s.KeyWithSecretSerializer},
        summary="Create a key (the answer holds its secret, once)",
    )
    def create(self, request: Request) -> Response:
        fields = self.valid(s.KeyWriteSerializer, request.data)
        api_key, secret = services.api_key_create(
            tenant=self.access.tenant, actor=self.access.actor, ip_address=client_address(request), **fields
        )
        data = s.KeyWithSecretSerializer(api_key, context={"secret": secret}).data
        return Response(data, status=status.HTTP_201_CREATED, headers=SHOWN_ONCE_HEADERS)

    @extend_schema(responses=s.KeySerializer, summary="Read a key")
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(s.KeySerializer(self.get_key()).data)

    @extend_schema(
        request=s.KeyWriteSerializer,
        responses=s.KeySerializer,
        summary="Change a key's allowlists and limits",
    )
    def partial_update(self, request: Request, id: str) -> Response:
        api_key = self.get_key()
        fields = self.valid(s.KeyWriteSerializer, request.data, partial=True)
        api_key = services.api_key_update(
            api_key=api_key, actor=self.access.actor, ip_address=client_address(request), **fields
        )
        return Response(s.KeySerializer(api_key).data)

    @extend_schema(responses={204: None}, summary="Revoke a key (it stops working at once)")
    def destroy(self, request: Request, id: str) -> Response:
        services.api_key_revoke(
            api_key=self.get_key(), actor=self.access.actor, ip_address=client_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=s.KeyRotateSerializer,
        responses={200: s.KeyWithSecretSerializer},
        summary="Give a key a new secret (the old one works for grace_seconds more)",
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, id: str) -> Response:
        api_key = self.get_key()
        grace = self.valid(s.KeyRotateSerializer, request.data)["grace_seconds"]
        secret = services.api_key_rotate(
            api_key=api_key,
            actor=self.access.actor,
            grace=timedelta(seconds=grace),
            ip_address=client_address(request),
        )
        data = s.KeyWithSecretSerializer(api_key, context={"secret": secret}).data
        return Response(data, headers=SHOWN_ONCE_HEADERS)

    @extend_schema(
        parameters=[s.UsageQuerySerializer],
        responses=s.UsageSerializer,
        summary="A key's requests per hour or day, by outcome and rejection code",
    )
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, id: str) -> Response:
        api_key = self.get_key()
        query = self.valid(s.UsageQuerySerializer, request.query_params)
        tenant = self.access.tenant
        rows = selectors.usage_summary(tenant=tenant, api_key=api_key, **query)
        would = selectors.usage_would_reject(
            tenant=tenant, api_key=api_key, since=query["since"], until=query["until"]
        )
        today = query["until"].astimezone(UTC).date()
        shared = {
            "days": sharing.sharing_days(api_key=api_key, today=today),
            "flags": sharing.sharing_flags(api_key=api_key, today=today),
        }
        data = {"key": api_key.key_id, **query, "results": rows, "would_reject": would, "sharing": shared}
        return Response(s.UsageSerializer(data).data)


@extend_schema(tags=["upstreams"], parameters=[TENANT_HEADER])
class UpstreamViewSet(TenantScoped, viewsets.ViewSet):
    """The tenant's own upstreams (admins manage them) and the global ones (read-only here)."""

    write_role = Role.ADMIN
    lookup_url_kwarg = "slug"
    # A slug's shape (keys.models.slug_validator): anything else is no route, as for key ids.
    lookup_value_regex = "[a-z0-9][a-z0-9-]{0,49}"
    pagination_class = Pagination

    def get_upstream(self, *, owned: bool) -> Upstream:
        try:
            upstream = selectors.upstream_get(tenant=self.access.tenant, slug=self.kwargs["slug"])
        except Upstream.DoesNotExist as exc:
            raise NotFound from exc
        if owned and upstream.tenant_id is None:
            raise ApiError("permission_denied", "Global upstreams are read-only; staff manage them.")
        return upstream

    @extend_schema(responses=s.UpstreamSerializer(many=True), summary="List own and global upstreams")
    def list(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.upstream_list(tenant=self.access.tenant), request, view=self
        )
        return paginator.get_paginated_response(s.UpstreamSerializer(page, many=True).data)

    @extend_schema(
        request=s.UpstreamSerializer,
        responses={201: s.UpstreamSerializer},
        summary="Create an upstream of the tenant's own (public addresses only)",
    )
    def create(self, request: Request) -> Response:
        fields = self.valid(s.UpstreamSerializer, request.data)
        upstream = services.upstream_create(
            tenant=self.access.tenant,
            actor=self.access.actor,
            actor_is_staff=False,
            ip_address=client_address(request),
            **fields,
        )
        return Response(s.UpstreamSerializer(upstream).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=s.UpstreamSerializer, summary="Read an upstream")
    def retrieve(self, request: Request, slug: str) -> Response:
        return Response(s.UpstreamSerializer(self.get_upstream(owned=False)).data)

    @extend_schema(
        request=s.UpstreamUpdateSerializer, responses=s.UpstreamSerializer, summary="Change an own upstream"
    )
    def partial_update(self, request: Request, slug: str) -> Response:
        upstream = self.get_upstream(owned=True)
        fields = self.valid(s.UpstreamUpdateSerializer, request.data, partial=True)
        upstream = services.upstream_update(
            upstream=upstream,
            actor=self.access.actor,
            actor_is_staff=False,
            ip_address=client_address(request),
            auth_value=fields.pop("auth_value", None),
            **fields,
        )
        return Response(s.UpstreamSerializer(upstream).data)

    @extend_schema(responses={204: None}, summary="Delete an own upstream")
    def destroy(self, request: Request, slug: str) -> Response:
        services.upstream_delete(
            upstream=self.get_upstream(owned=True),
            actor=self.access.actor,
            ip_address=client_address(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["management tokens"], parameters=[TENANT_HEADER])
class ManagementTokenViewSet(TenantScoped, viewsets.ViewSet):
    """Tokens for this API: admins only, reading included."""

    read_role = Role.ADMIN
    write_role = Role.ADMIN
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = Pagination

    def get_token(self) -> ManagementToken:
        try:
            return selectors.management_token_list(tenant=self.access.tenant).get(pk=int(self.kwargs["id"]))
        except ManagementToken.DoesNotExist as exc:
            raise NotFound from exc

    @extend_schema(responses=s.ManagementTokenSerializer(many=True), summary="List management tokens")
    def list(self, request: Request) -> Response:
        paginator = self.pagination_class()
        tokens = selectors.management_token_list(tenant=self.access.tenant)
        page = paginator.paginate_queryset(tokens, request, view=self)
        return paginator.get_paginated_response(s.ManagementTokenSerializer(page, many=True).data)

    @extend_schema(
        request=s.ManagementTokenCreateSerializer,
        responses={201: s.ManagementTokenCreatedSerializer},
        summary="Create a management token (the answer holds its value, once)",
    )
    def create(self, request: Request) -> Response:
        fields = self.valid(s.ManagementTokenCreateSerializer, request.data)
        token, clear = services.management_token_create(
            tenant=self.access.tenant, actor=self.access.actor, ip_address=client_address(request), **fields
        )
        data = s.ManagementTokenCreatedSerializer(token, context={"token": clear}).data
        return Response(data, status=status.HTTP_201_CREATED, headers=SHOWN_ONCE_HEADERS)

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        responses=s.ManagementTokenSerializer,
        summary="Read a management token",
    )
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(s.ManagementTokenSerializer(self.get_token()).data)

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        responses={204: OpenApiResponse(description="Revoked (it stops working at once).")},
        summary="Revoke a management token",
    )
    def destroy(self, request: Request, id: str) -> Response:
        services.management_token_revoke(
            token=self.get_token(), actor=self.access.actor, ip_address=client_address(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["members"], parameters=[TENANT_HEADER])
class MemberViewSet(TenantScoped, viewsets.ViewSet):
    """The tenant's members: every member sees them, admins manage them (the owner role: owners only)."""

    write_role = Role.ADMIN
    lookup_url_kwarg = "id"
    lookup_value_regex = "[0-9]{1,18}"
    pagination_class = Pagination

    def get_member(self) -> Membership:
        try:
            return selectors.membership_list(tenant=self.access.tenant).get(pk=int(self.kwargs["id"]))
        except Membership.DoesNotExist as exc:
            raise NotFound from exc

    @extend_schema(responses=s.MemberSerializer(many=True), summary="List members")
    def list(self, request: Request) -> Response:
        paginator = self.pagination_class()
        members = selectors.membership_list(tenant=self.access.tenant).order_by("created_at", "pk")
        page = paginator.paginate_queryset(members, request, view=self)
        return paginator.get_paginated_response(s.MemberSerializer(page, many=True).data)

    @extend_schema(
        request=s.MemberCreateSerializer,
        responses={201: s.MemberSerializer},
        summary="Add a member by e-mail (a new person sets a password through the reset flow)",
    )
    def create(self, request: Request) -> Response:
        fields = self.valid(s.MemberCreateSerializer, request.data)
        member = services.member_add(
            tenant=self.access.tenant,
            actor_role=self.access.role,
            actor=self.access.actor,
            ip_address=client_address(request),
            **fields,
        )
        return Response(s.MemberSerializer(member).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        responses=s.MemberSerializer,
        summary="Read a member",
    )
    def retrieve(self, request: Request, id: str) -> Response:
        return Response(s.MemberSerializer(self.get_member()).data)

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        request=s.MemberUpdateSerializer,
        responses=s.MemberSerializer,
        summary="Change a member's role",
    )
    def partial_update(self, request: Request, id: str) -> Response:
        fields = self.valid(s.MemberUpdateSerializer, request.data)
        member = services.member_change_role(
            membership=self.get_member(),
            actor_role=self.access.role,
            actor=self.access.actor,
            ip_address=client_address(request),
            **fields,
        )
        return Response(s.MemberSerializer(member).data)

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        responses={204: OpenApiResponse(description="Removed from the tenant.")},
        summary="Remove a member",
    )
    def destroy(self, request: Request, id: str) -> Response:
        services.member_remove(
            membership=self.get_member(),
            actor_role=self.access.role,
            actor=self.access.actor,
            ip_address=client_address(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(exclude=True)
class NotFoundView(APIView):
    """Any other path under /api/: 404 in the error body, whatever the method."""

    authentication_classes = []
    permission_classes = []

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        raise NotFound
