"""Forms of the portal: they parse what a person typed; the rules stay in keys.services."""

from datetime import timedelta

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from keys import selectors
from keys.models import ApiKey, Tenant
from keys.portal.common import add_service_errors

User = get_user_model()


def account_exists(email: str) -> bool:
    """Whether someone already signs in with this e-mail (as their e-mail or their username)."""
    return (
        User.objects.filter(email__iexact=email).exists()
        or User.objects.filter(username__iexact=email).exists()
    )


class NewPasswordForm(forms.Form):
    """A new account's password, typed twice and checked by the project's password validators."""

    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )
    password2 = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def check_new_password(self, email: str) -> None:
        password1, password2 = self.cleaned_data.get("password1"), self.cleaned_data.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords differ.")
        elif password2:
            try:
                password_validation.validate_password(password2, User(username=email.lower(), email=email))
            except ValidationError as exc:
                self.add_error("password2", exc)


class SignupForm(NewPasswordForm):
    email = forms.EmailField(max_length=150, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    organisation = forms.CharField(label="Organisation name", max_length=200)

    field_order = ["email", "password1", "password2", "organisation"]

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"].strip())
        if account_exists(email):
            raise ValidationError("An account with this e-mail already exists. Log in instead.")
        return email

    def clean_organisation(self) -> str:
        name = self.cleaned_data["organisation"].strip()
        if not name:
            raise ValidationError("Enter the name of your organisation.")
        return name

    def clean(self) -> dict:
        cleaned = super().clean()
        self.check_new_password(cleaned.get("email") or "")
        return cleaned


class RateLimitedAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing before any password check while the caller is rate limited."""

    def __init__(self, request=None, *args, limited: bool = False, **kwargs) -> None:
        super().__init__(request, *args, **kwargs)
        self.limited = limited
        self.fields["username"].label = "E-mail"

    def clean(self) -> dict:
        if self.limited:
            raise ValidationError(
                "Too many login attempts. Wait a minute and try again.", code="rate_limited"
            )
        if self.cleaned_data.get("username"):
            self.cleaned_data["username"] = self.cleaned_data["username"].strip().lower()
        return super().clean()


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    upstreams = forms.ModelMultipleChoiceField(
        queryset=None, required=False, to_field_name="slug", help_text="The upstreams this key may call."
    )
    secret_required = forms.BooleanField(
        required=False,
        label="Secret required",
        help_text="Every request must carry the key's secret or an access token (server-side apps).",
    )
    allowed_origins = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line, e.g. https://app.example.com or *.example.com. Empty: any origin.",
    )
    rate_limit = forms.CharField(
        required=False, max_length=20, help_text="e.g. 100/m or 10/s. Empty: no limit."
    )

    def __init__(self, *args, tenant: Tenant, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["upstreams"].queryset = selectors.upstream_list(tenant=tenant)

    def clean_allowed_origins(self) -> list[str]:
        return [line.strip() for line in self.cleaned_data["allowed_origins"].splitlines() if line.strip()]

    def clean_rate_limit(self) -> str | None:
        return self.cleaned_data["rate_limit"].strip() or None

    add_service_errors = add_service_errors


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _list_field(help_text: str) -> forms.CharField:
    return forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text=help_text)


class ApiKeyEditForm(ApiKeyCreateForm):
    """A key's settings. The values are checked and normalised by services.api_key_update."""

    LIST_FIELDS = (
        "allowed_origins",
        "allowed_ips",
        "allowed_user_agents",
        "allowed_http_methods",
        "allowed_rpc_methods",
    )

    allowed_ips = _list_field("One per line, e.g. 203.0.113.7 or 203.0.113.0/24. Empty: any address.")
    allowed_user_agents = _list_field("One per line; * matches any run of characters. Empty: any.")
    allowed_http_methods = _list_field("One per line, e.g. GET or POST. Empty: any method.")
    allowed_rpc_methods = _list_field("One per line, e.g. eth_blockNumber. Empty: any JSON-RPC method.")
    daily_quota = forms.IntegerField(required=False, help_text="Requests per day. Empty: no quota.")
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: never expires.",
    )

    field_order = [
        "name",
        "upstreams",
        "secret_required",
        *LIST_FIELDS,
        "rate_limit",
        "daily_quota",
        "expires_at",
    ]

    @classmethod
    def initial_for(cls, api_key: ApiKey) -> dict:
        initial = {name: getattr(api_key, name) for name in ("name", "secret_required", "daily_quota")}
        initial.update({name: "\n".join(getattr(api_key, name) or []) for name in cls.LIST_FIELDS})
        initial["upstreams"] = [u.slug for u in api_key.upstreams.all()]
        initial["rate_limit"] = api_key.rate_limit or ""
        initial["expires_at"] = api_key.expires_at
        return initial

    def clean_allowed_ips(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_ips"])

    def clean_allowed_user_agents(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_user_agents"])

    def clean_allowed_http_methods(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_http_methods"])

    def clean_allowed_rpc_methods(self) -> list[str]:
        return _lines(self.cleaned_data["allowed_rpc_methods"])


class ApiKeyRotateForm(forms.Form):
    GRACE_CHOICES = [
        ("0", "None: the old secret stops working at once"),
        ("3600", "1 hour"),
        ("86400", "24 hours"),
        ("604800", "7 days"),
    ]

    grace = forms.TypedChoiceField(
        choices=GRACE_CHOICES,
        coerce=lambda seconds: timedelta(seconds=int(seconds)),
        initial="86400",
        widget=forms.RadioSelect,
        label="Keep the old secret working for",
        help_text="Time to deploy the new secret before the old one is refused.",
    )

    add_service_errors = ApiKeyCreateForm.add_service_errors
