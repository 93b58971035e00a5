"""Reads. Every selector a tenant can reach takes `tenant=` and never returns another tenant's rows.

Callers import the package (`from keys import selectors; selectors.api_key_get(...)`); the reads live
in its modules, mirroring keys/services:
- tenants.py: tenants and memberships, roles.
- upstreams.py: a tenant's own and the global upstreams.
- api_keys.py: API keys and the check of a key's id and secret.
- tokens.py: access tokens and management tokens.
- audit.py: the audit trail.
- accounts.py: accounts and invitations.
- alerts.py: alert rules, webhook endpoints and their deliveries.
- usage.py: usage records: summaries, rejections by reason, charts, exports.
"""

from keys.selectors.accounts import (
    account_exists,
    email_confirmed,
    invitation_find,
    invitation_get,
    invitation_is_for,
    invitation_list_pending,
)
from keys.selectors.alerts import (
    alert_rule_get,
    alert_rule_list,
    webhook_delivery_list,
    webhook_endpoint_get,
    webhook_endpoint_list,
)
from keys.selectors.api_keys import (
    api_key_authenticate,
    api_key_find,
    api_key_get,
    api_key_list,
    api_key_secret_valid,
)
from keys.selectors.audit import (
    audit_action_list,
    audit_event_list,
)
from keys.selectors.tenants import (
    ROLE_RANK,
    membership_for_user,
    membership_get,
    membership_get_by_id,
    membership_list,
    role_at_least,
    tenant_list_for_user,
)
from keys.selectors.tokens import (
    access_token_list,
    access_token_verify,
    management_token_authenticate,
    management_token_get,
    management_token_list,
)
from keys.selectors.upstreams import (
    upstream_get,
    upstream_get_owned,
    upstream_list,
    upstream_list_owned,
)
from keys.selectors.usage import (
    USAGE_PERIODS,
    requests_today_by_key,
    usage_by_period,
    usage_export,
    usage_list,
    usage_rejections,
    usage_summary,
    usage_would_reject,
)

__all__ = [
    "usage_would_reject",
    "alert_rule_get",
    "alert_rule_list",
    "webhook_delivery_list",
    "webhook_endpoint_get",
    "webhook_endpoint_list",
    "tenant_list_for_user",
    "membership_get",
    "membership_for_user",
    "ROLE_RANK",
    "role_at_least",
    "membership_list",
    "membership_get_by_id",
    "upstream_list",
    "upstream_get",
    "upstream_list_owned",
    "upstream_get_owned",
    "api_key_list",
    "api_key_get",
    "api_key_find",
    "api_key_secret_valid",
    "api_key_authenticate",
    "access_token_verify",
    "access_token_list",
    "management_token_authenticate",
    "management_token_list",
    "management_token_get",
    "audit_event_list",
    "audit_action_list",
    "invitation_list_pending",
    "invitation_get",
    "invitation_find",
    "invitation_is_for",
    "account_exists",
    "email_confirmed",
    "usage_list",
    "USAGE_PERIODS",
    "usage_summary",
    "usage_rejections",
    "usage_by_period",
    "usage_export",
    "requests_today_by_key",
]
