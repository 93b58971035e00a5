"""Upstreams: where the proxy relays to, with their credentials (stored encrypted) and the SSRF refusal."""

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction

from keys import crypto, validators
from keys.models import AuthType, Tenant, Upstream
from keys.services.audit import Actor, audit_record
from keys.services.tenants import tenant_check_limit
from keys.services.updates import model_update

UPSTREAM_FIELDS = (
    "name",
    "base_url",
    "websocket_url",
    "auth_type",
    "auth_name",
    "timeout_seconds",
    "is_active",
)


def _upstream_check_auth(upstream: Upstream, auth_value: str | None) -> None:
    """The credential's settings, the stored value included when `auth_value` is None (it is kept, and
    may now travel another way, e.g. in a header rather than a query)."""
    if upstream.auth_type == AuthType.NONE:
        return
    value: str | None = auth_value
    if value is None:
        try:
            value = crypto.decrypt(upstream.auth_value_encrypted)
        except ValueError:  # under a retired encryption key: unreadable here, and checked when saved
            value = None
    errors: dict[str, list[str]] = {}
    if not (value or (value is None and upstream.has_credential)):
        errors["auth_value"] = [f"Auth type {upstream.auth_type!r} needs a value."]
    try:
        validators.check_credential(
            auth_type=upstream.auth_type, auth_name=upstream.auth_name, auth_value=value
        )
    except ValidationError as exc:
        errors = {**exc.message_dict, **errors}
    if errors:
        raise ValidationError(errors)


def _destination(url: str) -> tuple[str, str, int | None]:
    """Where a URL connects: scheme, host and port (the path does not change the machine)."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def upstream_validate(
    *,
    upstream: Upstream,
    auth_value: str | None,
    actor_is_staff: bool,
    resolve: validators.Resolver = validators.resolve_host,
) -> None:
    """Raise ValidationError (by field) unless the upstream may be saved: URL, SSRF, auth."""
    if upstream.allow_private_network and not actor_is_staff:
        raise ValidationError(
            {"allow_private_network": ["Only staff may allow an upstream on a private network."]}
        )
    upstream.full_clean()
    upstream.base_url = validators.clean_upstream_url(upstream.base_url)
    upstream.websocket_url = validators.clean_upstream_websocket_url(upstream.websocket_url)
    _upstream_check_auth(upstream, auth_value)
    if not upstream.allow_private_network:
        for field in ("base_url", "websocket_url"):
            if url := getattr(upstream, field):
                try:
                    validators.check_public_destination(url, resolve=resolve)
                except ValidationError as exc:
                    raise ValidationError({field: exc.messages}) from exc


def _upstream_set_credential(upstream: Upstream, auth_value: str | None) -> None:
    if upstream.auth_type == AuthType.NONE:
        upstream.auth_name = ""
        upstream.auth_value_encrypted = ""
    elif auth_value is not None:
        upstream.auth_value_encrypted = crypto.encrypt(auth_value)


@transaction.atomic
def upstream_create(
    *,
    tenant: Tenant | None,
    slug: str,
    base_url: str,
    name: str = "",
    websocket_url: str = "",
    auth_type: str = AuthType.NONE,
    auth_name: str = "",
    auth_value: str = "",
    timeout_seconds: int = 30,
    is_active: bool = True,
    allow_private_network: bool = False,
    actor: Actor = None,
    actor_is_staff: bool = False,
    ip_address: str | None = None,
    resolve: validators.Resolver = validators.resolve_host,
) -> Upstream:
    """A tenant's own upstream, or a global one (tenant None) made by staff. Refuses private addresses
    unless staff allowed them."""
    if tenant is None and not actor_is_staff:
        raise ValidationError({"tenant": ["Only staff may create a global upstream."]})
    if tenant is not None:
        owned = Upstream.objects.filter(tenant=tenant)
        tenant_check_limit(
            tenant=tenant, rows=owned, setting="KEYS_MAX_UPSTREAMS_PER_TENANT", what="upstreams"
        )
    upstream = Upstream(
        tenant=tenant,
        slug=slug,
        name=name or slug,
        base_url=base_url,
        websocket_url=websocket_url,
        auth_type=auth_type,
        auth_name=auth_name,
        timeout_seconds=timeout_seconds,
        is_active=is_active,
        allow_private_network=allow_private_network,
    )
    upstream_validate(
        upstream=upstream, auth_value=auth_value, actor_is_staff=actor_is_staff, resolve=resolve
    )
    _upstream_set_credential(upstream, auth_value)
    upstream.save()
    audit_record(
        action="upstream.created",
        tenant=tenant,
        actor=actor,
        target=upstream,
        ip_address=ip_address,
        data={"base_url": upstream.base_url, "auth_type": upstream.auth_type},
    )
    return upstream


@transaction.atomic
def upstream_update(
    *,
    upstream: Upstream,
    actor: Actor = None,
    actor_is_staff: bool = False,
    auth_value: str | None = None,
    allow_private_network: bool | None = None,
    ip_address: str | None = None,
    resolve: validators.Resolver = validators.resolve_host,
    **fields: object,
) -> Upstream:
    """Change an upstream's fields; `auth_value` None keeps the stored credential."""
    unknown = set(fields) - set(UPSTREAM_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in unknown})
    data = dict(fields)
    private = upstream.allow_private_network
    moved = any(
        _destination(str(data.get(field, getattr(upstream, field)))) != _destination(getattr(upstream, field))
        for field in ("base_url", "websocket_url")
    )
    if private and not actor_is_staff and moved:
        # Staff allowed that one private host, not any: a tenant who moves the upstream elsewhere
        # loses the permission, so the new destination must be public like any other.
        private = data["allow_private_network"] = False
    if allow_private_network is not None and allow_private_network != private:
        if not actor_is_staff:
            raise ValidationError(
                {"allow_private_network": ["Only staff may allow an upstream on a private network."]}
            )
        data["allow_private_network"] = allow_private_network

    def validate_and_encrypt() -> None:
        # A tenant editing an upstream staff put on a private network keeps that permission.
        upstream_validate(upstream=upstream, auth_value=auth_value, actor_is_staff=True, resolve=resolve)
        _upstream_set_credential(upstream, auth_value)

    changed = model_update(instance=upstream, data=data, clean=validate_and_encrypt)
    changed += ["auth_value"] if auth_value is not None else []
    if changed:
        audit_record(
            action="upstream.updated",
            tenant=upstream.tenant,
            actor=actor,
            target=upstream,
            ip_address=ip_address,
            data={"fields": sorted(changed)},
        )
    return upstream


@transaction.atomic
def upstream_delete(*, upstream: Upstream, actor: Actor = None, ip_address: str | None = None) -> None:
    audit_record(
        action="upstream.deleted", tenant=upstream.tenant, actor=actor, target=upstream, ip_address=ip_address
    )
    upstream.delete()
