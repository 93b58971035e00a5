"""What each role may do through the management API (the ranks are keys.selectors.ROLE_RANK)."""

from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.views import APIView

from keys import selectors
from keys.api.authentication import TenantAccess
from keys.api.errors import ApiError
from keys.models import Role


class TenantRole(permissions.BasePermission):
    """A caller acting for a tenant, whose role reaches the view's `read_role` for safe methods and its
    `write_role` for the others. Views default to: every member reads, developers write."""

    message = "You may not do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.user is None or not getattr(request.user, "is_authenticated", False):
            return False
        access = request.auth
        if not isinstance(access, TenantAccess):  # None: a session user with no membership there
            self.message = "You are not a member of that tenant (choose one with the X-Tenant header)."
            return False
        if not access.tenant.is_active:
            raise ApiError("tenant_suspended", f"The account {access.tenant.slug} is suspended.")
        safe = request.method in permissions.SAFE_METHODS
        minimum = (
            getattr(view, "read_role", Role.VIEWER) if safe else getattr(view, "write_role", Role.DEVELOPER)
        )
        if not selectors.role_at_least(role=access.role, minimum=minimum):
            self.message = f"Your role ({access.role}) may not do this; it needs {minimum} or above."
            return False
        return True
