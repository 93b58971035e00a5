"""Forms of the portal's pages for a tenant's admins (upstreams, management tokens, the audit filter).
They parse what a person typed; the rules (URL, SSRF refusal, auth settings, uniqueness) stay in
keys.services."""

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from keys.models import AuthType, Upstream
from portal.common import add_service_errors


class UpstreamForm(forms.Form):
    """A tenant's own upstream. The credential is write-only: a password input never filled back in.
    Staff-only settings (the private-network permission) are not here."""

    slug = forms.CharField(
        max_length=50,
        help_text="How keys and proxy URLs name it: lower-case letters, digits and hyphens. Cannot change.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    name = forms.CharField(max_length=200, required=False, help_text="Empty: the slug.")
    base_url = forms.CharField(
        label="Base URL",
        max_length=2000,
        help_text="http or https, e.g. https://api.example.com/v1. Public addresses only.",
        widget=forms.TextInput(attrs={"inputmode": "url", "autocomplete": "off", "spellcheck": "false"}),
    )
    websocket_url = forms.CharField(
        label="WebSocket URL",
        max_length=2000,
        required=False,
        help_text="ws or wss, only when it is not the base URL with ws:// or wss:// (e.g. wss://mainnet.infura.io/ws/v3).",
        widget=forms.TextInput(attrs={"inputmode": "url", "autocomplete": "off", "spellcheck": "false"}),
    )
    auth_type = forms.ChoiceField(
        label="Auth type",
        choices=AuthType.choices,
        initial=AuthType.NONE,
        help_text="How the proxy signs in.",
    )
    auth_name = forms.CharField(
        label="Auth name",
        max_length=200,
        required=False,
        help_text="HTTP Basic: the user; named header: the header name; query parameter: its name.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    auth_value = forms.CharField(
        label="Credential",
        max_length=4096,
        required=False,
        strip=False,
        help_text="The password, token or key the proxy sends. Write-only: it is never shown again.",
        # Never rendered back, not even when the form comes back with an error.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    timeout_seconds = forms.IntegerField(
        label="Timeout (seconds)", min_value=1, max_value=600, initial=30, help_text="From 1 to 600."
    )
    is_active = forms.BooleanField(
        label="Active", required=False, initial=True, help_text="An inactive upstream refuses every request."
    )

    add_service_errors = add_service_errors

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"].strip()
        if slug == "new":  # the portal's address of this very page
            raise ValidationError("“new” is reserved; choose another slug.")
        return slug

    def clean_base_url(self) -> str:
        return self.cleaned_data["base_url"].strip()

    def clean_auth_name(self) -> str:
        return self.cleaned_data["auth_name"].strip()

    def service_fields(self) -> dict[str, Any]:
        """The cleaned values by the names upstream_create and upstream_update take (no credential)."""
        return {
            name: self.cleaned_data[name]
            for name in (
                "name",
                "base_url",
                "websocket_url",
                "auth_type",
                "auth_name",
                "timeout_seconds",
                "is_active",
            )
        }


class UpstreamEditForm(UpstreamForm):
    """An upstream's settings; the slug stays. An empty credential keeps the stored one."""

    clear_credential = forms.BooleanField(
        label="Remove the stored credential",
        required=False,
        help_text="Only with auth type None: an upstream that signs in needs a credential.",
    )

    field_order = [
        "name",
        "base_url",
        "websocket_url",
        "auth_type",
        "auth_name",
        "auth_value",
        "clear_credential",
        "timeout_seconds",
        "is_active",
    ]

    def __init__(self, data: QueryDict | None = None, *, upstream: Upstream, **kwargs: Any) -> None:
        initial = {
            "name": upstream.name,
            "base_url": upstream.base_url,
            "websocket_url": upstream.websocket_url,
            "auth_type": upstream.auth_type,
            "auth_name": upstream.auth_name,
            "timeout_seconds": upstream.timeout_seconds,
            "is_active": upstream.is_active,
        }
        super().__init__(data, initial=initial, **kwargs)
        del self.fields["slug"]
        credential = self.fields["auth_value"]
        credential.label = "New credential"
        credential.help_text = (
            "Empty: keep the current credential"
            + (" (one is set)." if upstream.has_credential else " (none is set).")
            + " Write-only: it is never shown."
        )

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data (its stub allows an override's None)
        cleaned = self.cleaned_data
        if cleaned.get("clear_credential") and cleaned.get("auth_value"):
            raise ValidationError("Either type a new credential or remove the stored one, not both.")
        return cleaned

    def credential(self) -> str | None:
        """What upstream_update takes: None keeps the stored credential, "" removes it."""
        if self.cleaned_data["clear_credential"]:
            return ""
        return self.cleaned_data["auth_value"] or None


class ManagementTokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        help_text="What uses it, e.g. “CI deploy” — to tell tokens apart.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )

    add_service_errors = add_service_errors

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError("Enter a name.")
        return name


class AuditFilterForm(forms.Form):
    """The audit log's filter: one of the actions this tenant's log holds."""

    action = forms.ChoiceField(label="Action", required=False)

    def __init__(self, *args: Any, actions: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["action"]).choices = [
            ("", "All actions"),
            *((action, action) for action in actions),
        ]
