"""Who is calling the management API, and as which tenant.

Both authenticators leave the tenant the caller acts for in `request.auth` (a TenantAccess):
- a management token (`Authorization: Bearer mt_…`) acts as an admin of its own tenant;
- a portal session (CSRF enforced) acts through the user's membership in the tenant named by the
  `X-Tenant: <slug>` header or, without it, their first (oldest) membership.
"""

from dataclasses import dataclass

from django.contrib.auth.models import User
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from keys import selectors, services
from keys.models import ManagementToken, Role, Tenant

TENANT_HEADER = "X-Tenant"


@dataclass(frozen=True, slots=True)
class TenantAccess:
    """The tenant a request acts for, with which role, and who to name in the audit trail."""

    tenant: Tenant
    role: str
    actor: User | str
    token: ManagementToken | None = None


class ManagementTokenUser:
    """request.user of a call made with a management token: authenticated, not a site user."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, token: ManagementToken) -> None:
        self.token = token

    def __str__(self) -> str:
        return f"management token {self.token.name} (…{self.token.hint})"


class ManagementTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mt_…`: a live token of an active tenant, acting as that tenant's admin."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ManagementTokenUser, TenantAccess] | None:
        scheme, _, value = authentication.get_authorization_header(request).partition(b" ")
        if scheme.lower() != self.keyword.lower().encode():
            return None
        try:
            clear = value.decode("ascii").strip()
        except UnicodeDecodeError:
            clear = ""
        token = selectors.management_token_authenticate(token=clear)
        if token is None:
            raise exceptions.AuthenticationFailed("The bearer token is not a live management token.")
        services.management_token_mark_used(token=token)
        user = ManagementTokenUser(token)
        return user, TenantAccess(tenant=token.tenant, role=Role.ADMIN, actor=str(user), token=token)

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class TenantSessionAuthentication(authentication.SessionAuthentication):
    """A signed-in portal user (CSRF enforced), acting through one membership: the tenant named by
    X-Tenant, else their first. A user with no such membership is authenticated with no tenant
    (request.auth None), which the permissions refuse with 403."""

    def authenticate(self, request: Request) -> tuple[User, TenantAccess | None] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user = result[0]
        membership = selectors.membership_for_user(
            user=user, tenant_slug=request.headers.get(TENANT_HEADER) or None
        )
        if membership is None:
            return user, None
        return user, TenantAccess(tenant=membership.tenant, role=membership.role, actor=user)
