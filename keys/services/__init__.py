"""Writes: every change a user, staff member, command or job makes to the domain goes through here.

Each service validates (full_clean, with field errors), writes, and records an audit event. The
proxy's cached policies are dropped by keys/signals.py after commit, whatever made the change.

Callers import the package (`from keys import services; services.api_key_create(...)`); the rules live
in its modules:
- audit.py: audit_record and Actor, used by every service.
- accounts.py: users by e-mail, sign-up, e-mail confirmation.
- tenants.py: tenants, memberships, members and the owner rules.
- upstreams.py: upstreams, their credentials and the SSRF refusal.
- api_keys.py: API keys and the access tokens issued for them.
- management_tokens.py: tokens of the management API.
- invitations.py: invitations to join a tenant.
"""

from keys.services.accounts import (
    ACCOUNT_EXISTS,
    CONFIRMATION_REFUSALS,
    CONFIRMATION_SALT,
    UNCONFIRMED_ACCOUNT,
    User,
    email_confirm,
    email_confirm_by_token,
    email_confirmation_token,
    user_create_with_password,
    user_get_or_create,
)
from keys.services.api_keys import (
    ALLOWLIST_CHECKS,
    KEY_FIELDS,
    access_token_issue,
    access_token_revoke,
    api_key_allowlist_add,
    api_key_check_enforce,
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
)
from keys.services.audit import Actor, audit_record
from keys.services.invitations import (
    INVITATION_REFUSALS,
    INVITER_UNCONFIRMED,
    invitation_accept,
    invitation_create,
    invitation_revoke,
)
from keys.services.management_tokens import (
    MANAGEMENT_TOKEN_USE_RESOLUTION,
    management_token_create,
    management_token_mark_used,
    management_token_revoke,
)
from keys.services.tenants import (
    member_add,
    member_change_role,
    member_remove,
    membership_set,
    tenant_check_limit,
    tenant_create,
    tenant_set_active,
)
from keys.services.upstreams import (
    UPSTREAM_FIELDS,
    upstream_create,
    upstream_delete,
    upstream_update,
    upstream_validate,
)

__all__ = [
    "ACCOUNT_EXISTS",
    "CONFIRMATION_REFUSALS",
    "CONFIRMATION_SALT",
    "INVITATION_REFUSALS",
    "INVITER_UNCONFIRMED",
    "KEY_FIELDS",
    "MANAGEMENT_TOKEN_USE_RESOLUTION",
    "UNCONFIRMED_ACCOUNT",
    "UPSTREAM_FIELDS",
    "Actor",
    "User",
    "access_token_issue",
    "access_token_revoke",
    "ALLOWLIST_CHECKS",
    "api_key_allowlist_add",
    "api_key_check_enforce",
    "api_key_create",
    "api_key_revoke",
    "api_key_rotate",
    "api_key_update",
    "audit_record",
    "email_confirm",
    "email_confirm_by_token",
    "email_confirmation_token",
    "invitation_accept",
    "invitation_create",
    "invitation_revoke",
    "management_token_create",
    "management_token_mark_used",
    "management_token_revoke",
    "member_add",
    "member_change_role",
    "member_remove",
    "membership_set",
    "tenant_check_limit",
    "tenant_create",
    "tenant_set_active",
    "upstream_create",
    "upstream_delete",
    "upstream_update",
    "upstream_validate",
    "user_create_with_password",
    "user_get_or_create",
]
