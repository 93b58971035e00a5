"""Forms of the alerts and webhooks pages. They parse what a person typed; the rules (which fields a rule
of each event uses, the webhook URL's SSRF refusal) stay in keys.services."""

from typing import Any, cast

from django import forms

from keys.alert_models import AlertEvent
from keys.models import ApiKey, Tenant
from keys.services.alerts import QUOTA_LEVELS, RULE_DEFAULTS
from portal.common import add_service_errors

RULE_EVENTS = [(value, label) for value, label in AlertEvent.choices if value in RULE_DEFAULTS]


class AlertRuleForm(forms.Form):
    event = forms.ChoiceField(label="When", choices=RULE_EVENTS)
    key = forms.ChoiceField(label="Key", required=False, help_text="Empty: every key of the organisation.")
    levels = forms.MultipleChoiceField(
        label="Quota levels",
        choices=[(str(level), f"{level} %") for level in QUOTA_LEVELS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Daily quota only: each level alerts once a day.",
    )
    threshold = forms.IntegerField(
        label="Threshold",
        required=False,
        min_value=1,
        help_text="Shares: percent of calls (10). Spike: percent of the previous hourly average (300).",
    )
    window_hours = forms.IntegerField(label="Window (hours)", required=False, min_value=1, max_value=24)
    min_calls = forms.IntegerField(
        label="At least this many calls", required=False, min_value=1, help_text="Shares and spikes only."
    )
    days = forms.IntegerField(
        label="Days",
        required=False,
        min_value=1,
        max_value=365,
        help_text="Expiring within / unused for N days.",
    )
    renotify_minutes = forms.IntegerField(
        label="Re-notify after (minutes)", required=False, min_value=1, initial=1440
    )
    recipients = forms.MultipleChoiceField(
        label="E-mail to", required=False, widget=forms.CheckboxSelectMultiple
    )
    send_webhooks = forms.BooleanField(
        label="Send to webhooks",
        required=False,
        initial=True,
        help_text="The endpoints that take this event.",
    )

    add_service_errors = add_service_errors

    def __init__(self, *args: Any, tenant: Tenant, members: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keys = ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True).order_by("name")
        key_field = cast(forms.ChoiceField, self.fields["key"])
        key_field.choices = [("", "Every key")] + [(k.key_id, f"{k.name} ({k.key_id})") for k in keys]
        recipients = cast(forms.MultipleChoiceField, self.fields["recipients"])
        recipients.choices = [(str(u.pk), u.email) for u in members]

    def service_fields(self) -> dict[str, Any]:
        """The cleaned values a rule of the chosen event uses (the service refuses the others)."""
        data = self.cleaned_data
        used = set(RULE_DEFAULTS[data["event"]])
        fields: dict[str, Any] = {
            "renotify_minutes": data.get("renotify_minutes"),
            "send_webhooks": data["send_webhooks"],
        }
        for name in ("threshold", "window_hours", "min_calls", "days"):
            if name in used and data.get(name) is not None:
                fields[name] = data[name]
        if "levels" in used and data.get("levels"):
            fields["levels"] = [int(level) for level in data["levels"]]
        return fields


class WebhookForm(forms.Form):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="https, on a public address, e.g. https://hooks.example.com/keys.",
        widget=forms.TextInput(attrs={"inputmode": "url", "autocomplete": "off", "spellcheck": "false"}),
    )
    events = forms.MultipleChoiceField(
        label="Events",
        choices=AlertEvent.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    description = forms.CharField(max_length=200, required=False)

    add_service_errors = add_service_errors


class LeakResponseForm(forms.Form):
    leak_response = forms.ChoiceField(
        label="When a secret or token is found in public",
        choices=[("revoke", "Revoke it at once"), ("alert", "Only alert")],
        widget=forms.RadioSelect,
    )

    add_service_errors = add_service_errors
