"""The Django admin, the way staff work: lists, search, filters, revoke actions and the audit trail.

Secrets are never displayed: key secrets and tokens exist only as hashes (a new one is shown once,
on the page that answers its creation), and upstream credentials are write-only.
"""

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.db.models.options import Options
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse_lazy
from django.utils import timezone
from django_ratelimit.core import is_ratelimited

from keys import services
from keys.client_address import client_address
from keys.models import (
    AccessToken,
    ApiKey,
    ApiKeyQuerySet,
    AuditEvent,
    AuthType,
    EmailConfirmation,
    Invitation,
    KeyState,
    ManagementToken,
    Membership,
    Role,
    Tenant,
    Upstream,
    UsageRecord,
)
from keys.shown_once import shown_once

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldGroups  # the stubs' name for what get_fields returns


def _login_client(group: str, request: HttpRequest) -> str:
    return client_address(request) or "unknown"


def _login_username(group: str, request: HttpRequest) -> str:
    return request.POST.get("username", "").strip().lower()


class RateLimitedAdminLoginForm(AdminAuthenticationForm):
    """The admin's login, limited as the portal's is: per client address and per username (brute
    force). Past the limit even the right password is refused, before any password check."""

    def clean(self) -> dict[str, Any]:
        if self.request is not None and self.request.method == "POST":
            rate = settings.ADMIN_LOGIN_RATE
            # Both counters move on every attempt, so neither can be probed for free.
            by_ip = is_ratelimited(
                self.request, group="admin-login-ip", key=_login_client, rate=rate, increment=True
            )
            by_name = is_ratelimited(
                self.request, group="admin-login-user", key=_login_username, rate=rate, increment=True
            )
            if by_ip or by_name:
                raise ValidationError(
                    "Too many login attempts. Wait a minute and try again.", code="rate_limited"
                )
        return super().clean()


admin.site.login_form = RateLimitedAdminLoginForm
# The admin's "View site" link: the tenant portal (the site root only redirects there).
# A lazy URL: the URL map is not loaded when the admin is. AdminSite.site_url is annotated str | None,
# while Django only ever formats it into a template, which a lazy string suits.
admin.site.site_url = reverse_lazy("portal:home")  # type: ignore[assignment]

_ModelT = TypeVar("_ModelT", bound=Model)
# Where a save hands the page that answers it the new secret (the request is this one save's own).
_KEY_SHOWN_ONCE_ATTR = "_new_key_secret"
_MANAGEMENT_SHOWN_ONCE_ATTR = "_new_management_token"


def _show_secret_once(
    request: HttpRequest,
    *,
    title: str,
    obj: Model,
    secret: str,
    admin_site: AdminSite,
    opts: Options[Any],
) -> TemplateResponse:
    """Render the page that shows a new secret; it is in this response and nowhere else."""
    response = TemplateResponse(
        request,
        "admin/keys/secret_once.html",
        {
            **admin_site.each_context(request),
            "title": title,
            "object": obj,
            "secret": secret,
            "opts": opts,
        },
    )
    return shown_once(response)


class MembershipInline(admin.TabularInline[Membership, Tenant]):
    """The tenant's members, to read: they are added, changed and removed on the Membership pages,
    through the services (owner rules, audit trail)."""

    model = Membership
    extra = 0
    # A tuple: what `fields` and `readonly_fields` both accept, in the stubs as at run time.
    fields = readonly_fields = ("user", "role", "created_at")
    show_change_link = True

    # `obj`: the tenant of the page (InlineModelAdmin) or a membership (BaseModelAdmin's signature).
    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ServiceRefusalsAsMessages(admin.ModelAdmin[_ModelT]):
    """A service's ValidationError (an owner rule, say) at save or delete: the page's transaction rolls
    back and the admin shows the refusal as an error above the same page."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin[Tenant]):
    list_display = ["slug", "name", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    actions = ["suspend", "activate"]

    def save_model(
        self, request: HttpRequest, obj: Tenant, form: forms.ModelForm[Tenant], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        services.audit_record(
            action="tenant.updated" if change else "tenant.created",
            tenant=obj,
            actor=request.user,
            target=obj,
            ip_address=client_address(request),
            data={"fields": form.changed_data},
        )

    @admin.action(description="Suspend selected tenants (their keys answer 403)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_set_active(
                tenant=tenant, is_active=False, actor=request.user, ip_address=client_address(request)
            )

    @admin.action(description="Reactivate selected tenants")
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_set_active(
                tenant=tenant, is_active=True, actor=request.user, ip_address=client_address(request)
            )


@admin.register(Membership)
class MembershipAdmin(ServiceRefusalsAsMessages[Membership]):
    """Memberships through the services: an audit event for each change, and the owner rules (staff act
    as an owner: they may grant the owner role, and a tenant still keeps one owner)."""

    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        # A membership changes role only: another person or tenant is another membership.
        return ["tenant", "user", "created_at"] if obj else []

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # removals one at a time, each under the owner rules
        return actions

    def save_model(
        self, request: HttpRequest, obj: Membership, form: forms.ModelForm[Membership], change: bool
    ) -> None:
        role, ip = form.cleaned_data["role"], client_address(request)
        if change:
            saved = services.member_change_role(
                membership=obj, role=role, actor_role=Role.OWNER, actor=request.user, ip_address=ip
            )
        else:
            saved = services.membership_set(
                tenant=form.cleaned_data["tenant"],
                user=form.cleaned_data["user"],
                role=role,
                actor=request.user,
                ip_address=ip,
            )
        obj.pk, obj.created_at = saved.pk, saved.created_at

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.member_remove(
            membership=obj, actor_role=Role.OWNER, actor=request.user, ip_address=client_address(request)
        )


class UpstreamAdminForm(forms.ModelForm[Upstream]):
    auth_value = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored credential.",
    )

    class Meta:
        model = Upstream
        fields = [
            "tenant",
            "slug",
            "name",
            "base_url",
            "websocket_url",
            "auth_type",
            "auth_name",
            "auth_value",
            "timeout_seconds",
            "is_active",
            "allow_private_network",
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()  # BaseModelForm.clean returns self.cleaned_data (its stub allows an override's None)
        data = self.cleaned_data
        if not self.errors:
            # Validate as the service will (SSRF, auth); the save itself goes through the service.
            candidate = Upstream(
                pk=self.instance.pk,
                auth_value_encrypted=self.instance.auth_value_encrypted,
                # UpstreamAdminForm's own fields: the admin's form class also lists its read-only fields.
                **{
                    field: data.get(field, getattr(self.instance, field, None))
                    for field in UpstreamAdminForm.Meta.fields
                    if field != "auth_value"
                },
            )
            candidate._state.adding = self.instance._state.adding  # an edit is not a clash with itself
            try:
                services.upstream_validate(
                    upstream=candidate, auth_value=data.get("auth_value") or None, actor_is_staff=True
                )
            except ValidationError as exc:
                # BaseModelForm's own way to file a model's ValidationError under its fields; the stubs
                # leave the private method out.
                self._update_errors(exc)  # type: ignore[attr-defined]
        return data


@admin.register(Upstream)
class UpstreamAdmin(ServiceRefusalsAsMessages[Upstream]):
    form = UpstreamAdminForm
    list_display = ["slug", "name", "tenant", "base_url", "auth_type", "is_active", "allow_private_network"]
    list_filter = ["is_active", "auth_type", "allow_private_network", ("tenant", admin.EmptyFieldListFilter)]
    search_fields = ["slug", "name", "base_url", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    readonly_fields = ["credential_stored"]

    def get_fields(self, request: HttpRequest, obj: Upstream | None = None) -> "_FieldGroups":
        return [*UpstreamAdminForm.Meta.fields, "credential_stored"]

    def get_readonly_fields(self, request: HttpRequest, obj: Upstream | None = None) -> list[str]:
        # Keys name upstreams by slug, and an upstream does not change owner: both are set once.
        return [*self.readonly_fields, "tenant", "slug"] if obj else list(self.readonly_fields)

    @admin.display(boolean=True, description="credential stored")
    def credential_stored(self, obj: Upstream) -> bool:
        return obj.auth_type != AuthType.NONE and obj.has_credential

    def save_model(
        self, request: HttpRequest, obj: Upstream, form: forms.ModelForm[Upstream], change: bool
    ) -> None:
        data = form.cleaned_data
        auth_value = data.get("auth_value") or None
        if change:
            services.upstream_update(
                upstream=Upstream.objects.get(pk=obj.pk),
                actor=request.user,
                actor_is_staff=True,
                ip_address=client_address(request),
                auth_value=auth_value,
                allow_private_network=data["allow_private_network"],
                **{field: data[field] for field in services.UPSTREAM_FIELDS},
            )
        else:
            fields = {field: data[field] for field in UpstreamAdminForm.Meta.fields if field != "auth_value"}
            obj.pk = services.upstream_create(
                **fields,
                auth_value=auth_value or "",
                actor=request.user,
                actor_is_staff=True,
                ip_address=client_address(request),
            ).pk

    def delete_model(self, request: HttpRequest, obj: Upstream) -> None:
        services.upstream_delete(upstream=obj, actor=request.user, ip_address=client_address(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upstream]) -> None:
        for upstream in queryset:
            services.upstream_delete(
                upstream=upstream, actor=request.user, ip_address=client_address(request)
            )


class KeyStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        return KeyState.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        state = self.value()
        if state in KeyState.values:
            # ApiKeyAdmin's list filter: the rows are ApiKey.objects' (an ApiKeyQuerySet).
            return cast(ApiKeyQuerySet, queryset).in_state(state, now=timezone.now())
        return queryset


class ApiKeyAdminForm(forms.ModelForm[ApiKey]):
    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "upstreams", *services.KEY_FIELDS[1:]]

    def clean(self) -> dict[str, Any]:
        super().clean()  # as UpstreamAdminForm's: this is self.cleaned_data
        data = self.cleaned_data
        tenant = data.get("tenant") or (self.instance.tenant if self.instance.pk else None)
        foreign = [
            u.slug
            for u in data.get("upstreams") or ()
            if u.tenant_id not in (None, getattr(tenant, "pk", None))
        ]
        if foreign:
            self.add_error("upstreams", f"These upstreams belong to another tenant: {', '.join(foreign)}.")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(ServiceRefusalsAsMessages[ApiKey]):
    form = ApiKeyAdminForm
    list_display = [
        "key_id",
        "name",
        "tenant",
        "state",
        "secret_required",
        "rate_limit",
        "last_used_at",
        "created_at",
    ]
    list_filter = [KeyStateFilter, "secret_required", "tenant"]
    search_fields = ["key_id", "name", "tenant__slug"]
    autocomplete_fields = ["tenant"]
    filter_horizontal = ["upstreams"]
    readonly_fields = [
        "key_id",
        "revoked_at",
        "previous_secret_expires_at",
        "created_by",
        "created_at",
        "last_used_at",
    ]
    actions = ["revoke", "rotate_now"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # The owning tenant is chosen once; moving a key between tenants would leak it.
        return [*self.readonly_fields, "tenant"] if obj else list(self.readonly_fields)

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm[ApiKey], change: bool
    ) -> None:
        fields = {name: form.cleaned_data[name] for name in services.KEY_FIELDS if name in form.cleaned_data}
        if change:
            services.api_key_update(
                api_key=obj, actor=request.user, ip_address=client_address(request), **fields
            )
        else:
            fields.pop("name")
            key, secret = services.api_key_create(
                tenant=form.cleaned_data["tenant"],
                name=form.cleaned_data["name"],
                actor=request.user,
                ip_address=client_address(request),
                **fields,
            )
            form.instance = key
            obj.pk, obj.key_id = key.pk, key.key_id
            setattr(request, _KEY_SHOWN_ONCE_ATTR, secret)

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm[ApiKey], formsets: Any, change: bool
    ) -> None:
        form.instance.upstreams.set(form.cleaned_data["upstreams"])
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        secret = getattr(request, _KEY_SHOWN_ONCE_ATTR, None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return _show_secret_once(
            request,
            title="API key created",
            obj=obj,
            secret=secret,
            admin_site=self.admin_site,
            opts=self.opts,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key, actor=request.user, ip_address=client_address(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)

    @admin.action(description="Rotate the secret of one key (old secret stops at once)")
    def rotate_now(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(
                request, "Rotate one key at a time: its new secret is shown once.", messages.ERROR
            )
            return None
        api_key = queryset.get()
        secret = services.api_key_rotate(
            api_key=api_key, actor=request.user, grace=timedelta(0), ip_address=client_address(request)
        )
        return _show_secret_once(
            request,
            title="API key rotated",
            obj=api_key,
            secret=secret,
            admin_site=self.admin_site,
            opts=self.opts,
        )


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin[AccessToken]):
    list_display = ["__str__", "api_key", "tenant", "expires_at", "revoked_at", "created_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["api_key__key_id", "api_key__tenant__slug"]
    # A tuple: what `fields` and `readonly_fields` both accept, in the stubs as at run time.
    fields = readonly_fields = ("api_key", "allowed_origins", "expires_at", "revoked_at", "created_at")
    actions = ["revoke"]

    @admin.display(description="tenant")
    def tenant(self, obj: AccessToken) -> Tenant:
        return obj.api_key.tenant

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessToken]:
        return super().get_queryset(request).select_related("api_key__tenant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are exchanged through the API, from a key and its secret

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AccessToken]) -> None:
        for token in queryset:
            services.access_token_revoke(token=token, actor=request.user, ip_address=client_address(request))
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


class ManagementTokenAdminForm(forms.ModelForm[ManagementToken]):
    class Meta:
        model = ManagementToken
        fields = ["tenant", "name"]


@admin.register(ManagementToken)
class ManagementTokenAdmin(ServiceRefusalsAsMessages[ManagementToken]):
    form = ManagementTokenAdminForm
    list_display = ["name", "tenant", "hint", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "tenant__slug", "hint"]
    autocomplete_fields = ["tenant"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: ManagementToken | None = None) -> list[str]:
        return ["tenant", "hint", "created_by", "created_at", "last_used_at", "revoked_at"] if obj else []

    def save_model(
        self, request: HttpRequest, obj: ManagementToken, form: forms.ModelForm[ManagementToken], change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, clear = services.management_token_create(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            actor=request.user,
            ip_address=client_address(request),
        )
        form.instance = token
        obj.pk = token.pk
        setattr(request, _MANAGEMENT_SHOWN_ONCE_ATTR, clear)

    def response_add(
        self, request: HttpRequest, obj: ManagementToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        return _show_secret_once(
            request,
            title="Management token created",
            obj=obj,
            secret=getattr(request, _MANAGEMENT_SHOWN_ONCE_ATTR),
            admin_site=self.admin_site,
            opts=self.opts,
        )

    @admin.action(description="Revoke selected management tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ManagementToken]) -> None:
        for token in queryset:
            services.management_token_revoke(
                token=token, actor=request.user, ip_address=client_address(request)
            )
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin[_ModelT]):
    """Records that are written by the system only: staff read them, nobody edits them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: _ModelT | None = None) -> bool:
        return False


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin[Invitation]):
    """Invitations are sent from the portal (their link is e-mailed once, never stored): staff read
    them and withdraw them; the token's hash is not shown."""

    list_display = ["email", "tenant", "role", "state", "invited_by", "created_at", "expires_at"]
    list_filter = [
        "role",
        ("accepted_at", admin.EmptyFieldListFilter),
        ("revoked_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["email", "tenant__slug"]
    # A tuple: what `fields` and `readonly_fields` both accept, in the stubs as at run time.
    fields = readonly_fields = (
        "tenant",
        "email",
        "role",
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "revoked_at",
    )
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Invitation]:
        return super().get_queryset(request).select_related("tenant", "invited_by")

    @admin.action(description="Withdraw selected invitations")
    def revoke(self, request: HttpRequest, queryset: QuerySet[Invitation]) -> None:
        pending = list(queryset.filter(accepted_at__isnull=True, revoked_at__isnull=True))
        for invitation in pending:
            # Staff act above every tenant role, the owner's included.
            services.invitation_revoke(
                invitation=invitation,
                actor_role=Role.OWNER,
                actor=request.user,
                ip_address=client_address(request),
            )
        self.message_user(request, f"Withdrew {len(pending)} invitation(s).", messages.SUCCESS)


@admin.register(EmailConfirmation)
class EmailConfirmationAdmin(ReadOnlyAdmin[EmailConfirmation]):
    """Which accounts proved their e-mail, and how (written by keys.services.email_confirm only)."""

    list_display = ["email", "user", "method", "confirmed_at"]
    list_filter = ["method"]
    search_fields = ["email", "user__username"]
    # A tuple: what `fields` and `readonly_fields` both accept, in the stubs as at run time.
    fields = readonly_fields = ("user", "email", "method", "confirmed_at")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin[UsageRecord]):
    list_display = ["hour", "tenant", "api_key", "outcome", "code", "count"]
    list_filter = ["outcome", "code", "hour"]
    search_fields = ["api_key__key_id", "tenant__slug"]
    date_hierarchy = "hour"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin[AuditEvent]):
    list_display = ["created_at", "action", "tenant", "actor_label", "target_type", "target_id", "ip_address"]
    list_filter = ["action", "target_type"]
    search_fields = ["action", "target_id", "actor_label", "tenant__slug"]
    date_hierarchy = "created_at"
