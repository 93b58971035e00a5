"""Forms of the portal: they parse what a person typed; the rules stay in keys.services."""

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from keys import selectors
from keys.models import ApiKey, Tenant, Upstream
from keys.services import KEY_FIELDS
from portal.common import add_service_errors

User = get_user_model()


def account_exists(email: str) -> bool:
    """Whether someone already signs in with this e-mail (as their e-mail or their username)."""
    return selectors.account_exists(email=email)


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
    """A new account and its organisation; refused with a form error while the client is rate limited."""

    email = forms.EmailField(
        label="E-mail", max_length=150, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )
    organisation = forms.CharField(label="Organisation name", max_length=200)

    field_order = ["email", "password1", "password2", "organisation"]

    def __init__(self, *args: Any, limited: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limited = limited

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"].strip())
        # While limited, nothing is looked up: the form is no free oracle of which addresses have accounts.
        if not self.limited and account_exists(email):
            raise ValidationError("An account with this e-mail already exists. Log in instead.")
        return email

    def clean_organisation(self) -> str:
        name = self.cleaned_data["organisation"].strip()
        if not name:
            raise ValidationError("Enter the name of your organisation.")
        return name

    def clean(self) -> dict[str, Any]:
        if self.limited:
            raise ValidationError(
                "Too many sign-ups from your address. Try again later.", code="rate_limited"
            )
        super().clean()  # Form.clean returns self.cleaned_data (its stub allows an override's None)
        cleaned = self.cleaned_data
        self.check_new_password(cleaned.get("email") or "")
        return cleaned

    add_service_errors = add_service_errors


class RateLimitedAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing before any password check while the caller is rate limited."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The e-mail or the password is wrong (passwords are case-sensitive).",
    }

    def __init__(
        self, request: HttpRequest | None = None, *args: Any, limited: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(request, *args, **kwargs)
        self.limited = limited
        self.fields["username"].label = "E-mail"
        self.error_messages["invalid_login"] = (
            "The e-mail or the password is wrong (the password is case-sensitive)."
        )

    def clean(self) -> dict[str, Any]:
        if self.limited:
            raise ValidationError(
                "Too many login attempts. Wait a minute and try again.", code="rate_limited"
            )
        if self.cleaned_data.get("username"):
            self.cleaned_data["username"] = self.cleaned_data["username"].strip().lower()
        return super().clean()


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _list_field(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        required=False, label=label, widget=forms.Textarea(attrs={"rows": 3}), help_text=help_text
    )


def _normalised(name: str, value: Any) -> object:
    """`value` as the key stores it; one the key would refuse stays as typed (so it differs)."""
    normalise = ApiKey.NORMALISERS.get(name)
    if normalise is None:
        return value
    try:
        return normalise(value)
    except ValidationError:
        return value


REPORT_CHOICES = [
    ("allowed_origins", "Origins"),
    ("allowed_ips", "Client addresses"),
    ("allowed_user_agents", "User agents"),
    ("allowed_http_methods", "HTTP methods"),
    ("allowed_rpc_methods", "JSON-RPC methods"),
    ("rate_limit", "Rate limit"),
    ("daily_quota", "Daily quota"),
]


class ApiKeyCreateForm(forms.Form):
    """A key's settings: KEY_FIELDS and the upstreams, which services.api_key_create and api_key_update
    take as they are; the services check and normalise the values."""

    LIST_FIELDS = (
        "allowed_origins",
        "allowed_ips",
        "allowed_user_agents",
        "allowed_http_methods",
        "allowed_rpc_methods",
    )

    name = forms.CharField(max_length=200)
    upstreams: "forms.ModelMultipleChoiceField[Upstream]" = forms.ModelMultipleChoiceField(
        queryset=None, required=False, to_field_name="slug", help_text="The upstreams this key may call."
    )
    secret_required = forms.BooleanField(
        required=False,
        label="Secret required",
        help_text="Every request must carry the key's secret or an access token (server-side apps).",
    )
    allowed_origins = _list_field(
        "Allowed origins", "One per line, e.g. https://app.example.com or *.example.com. Empty: any origin."
    )
    allowed_ips = _list_field(
        "Allowed IPs", "One per line, e.g. 203.0.113.7 or 203.0.113.0/24. Empty: any address."
    )
    allowed_user_agents = _list_field(
        "Allowed user agents", "One per line; * matches any run of characters. Empty: any."
    )
    allowed_http_methods = _list_field(
        "Allowed HTTP methods", "One per line, e.g. GET or POST. Empty: any method."
    )
    allowed_rpc_methods = _list_field(
        "Allowed JSON-RPC methods", "One per line, e.g. eth_blockNumber. Empty: any JSON-RPC method."
    )
    rate_limit = forms.CharField(
        required=False, max_length=20, help_text="e.g. 100/m or 10/s. Empty: no limit."
    )
    daily_quota = forms.IntegerField(required=False, help_text="Requests per day. Empty: no quota.")
    report_only = forms.MultipleChoiceField(
        required=False,
        label="Report only",
        choices=REPORT_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Checked checks let a request they would refuse through, answer X-Would-Reject and count it "
            "on the key's page: for a key already in production (a browser app learning its real "
            "origins). Unchecked: refused."
        ),
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at (UTC)",
        # To the second: a key's expiry set through the API may have seconds, and they are shown.
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"),
        help_text="A date and time in UTC, not your local time. Empty: never expires.",
    )

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        upstreams = selectors.upstream_list(tenant=tenant)
        cast(forms.ModelMultipleChoiceField, self.fields["upstreams"]).queryset = upstreams
        if "upstreams" not in self.initial and len(choices := list(upstreams[:2])) == 1:
            self.initial["upstreams"] = [choices[0].slug]  # the only one there is: a key needs one

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data (its stub allows an override's None)
        cleaned = self.cleaned_data
        for name in self.LIST_FIELDS:
            if name in cleaned:
                cleaned[name] = _lines(cleaned[name])
        return cleaned

    def clean_rate_limit(self) -> str | None:
        return self.cleaned_data["rate_limit"].strip() or None

    def clean_expires_at(self) -> datetime | None:
        value = self.cleaned_data["expires_at"]
        # The label says UTC: what was typed is read as UTC, whatever the site's time zone.
        return timezone.make_aware(timezone.make_naive(value), UTC) if value else None

    add_service_errors = add_service_errors


class ApiKeyEditForm(ApiKeyCreateForm):
    """The same settings, starting from the key's values; `changes()` tells which ones the person changed."""

    def __init__(self, *args: Any, tenant: Tenant, api_key: ApiKey, **kwargs: Any) -> None:
        super().__init__(*args, tenant=tenant, initial=self.initial_for(api_key), **kwargs)
        self.api_key = api_key

    @classmethod
    def initial_for(cls, api_key: ApiKey) -> dict[str, Any]:
        initial = {name: getattr(api_key, name) for name in ("name", "secret_required", "daily_quota")}
        initial.update({name: "\n".join(getattr(api_key, name) or []) for name in cls.LIST_FIELDS})
        initial["upstreams"] = [u.slug for u in api_key.upstreams.all()]
        initial["rate_limit"] = api_key.rate_limit or ""
        initial["report_only"] = list(api_key.report_only or [])
        # Naive UTC, so the field shows UTC as its label says, whatever the site's time zone.
        initial["expires_at"] = api_key.expires_at and timezone.make_naive(api_key.expires_at, UTC)
        return initial

    def clean_expires_at(self) -> datetime | None:
        value = super().clean_expires_at()
        current = self.api_key.expires_at
        # The field shows whole seconds: the key's own expiry sent back unchanged keeps its fractions.
        if value and current and value == current.replace(microsecond=0):
            return current
        return value

    def changes(self) -> tuple[dict[str, Any], list[Upstream] | None]:
        """The KEY_FIELDS whose value differs from the key's (compared as the key stores them), and the
        upstreams if their set differs, else None. Only for a valid form."""
        data = self.cleaned_data
        fields = {
            name: data[name]
            for name in KEY_FIELDS
            if _normalised(name, data[name]) != getattr(self.api_key, name)
        }
        chosen = list(data["upstreams"])
        same = {u.pk for u in chosen} == {u.pk for u in self.api_key.upstreams.all()}
        return fields, None if same else chosen


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


class KeyCheckForm(forms.Form):
    """One report-mode check of a key to switch to enforce, or a value to add to its allowlist."""

    check = forms.ChoiceField(choices=REPORT_CHOICES)
    value = forms.CharField(required=False, max_length=200)
