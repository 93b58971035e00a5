"""Forms of the members page: inviting a person and changing a member's role."""

from typing import Any, cast

from django import forms

from keys.models import Role
from portal.common import add_service_errors


def _role_choices(actor_role: str) -> list[tuple[str, str]]:
    # Only an owner may grant the owner role (services.tenants._check_owner_rules); others are not offered it.
    return [
        (value, label) for value, label in Role.choices if value != Role.OWNER or actor_role == Role.OWNER
    ]


class InvitationForm(forms.Form):
    email = forms.EmailField(
        label="E-mail", max_length=150, widget=forms.EmailInput(attrs={"autocomplete": "off"})
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)

    def __init__(self, *args: Any, actor_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["role"]).choices = _role_choices(actor_role)

    add_service_errors = add_service_errors


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args: Any, actor_role: str, current_role: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = _role_choices(actor_role)
        if current_role == Role.OWNER and actor_role != Role.OWNER:
            choices = Role.choices  # shown as it is; the service refuses the change with a clear error
        role = cast(forms.ChoiceField, self.fields["role"])
        role.choices = choices
        role.initial = current_role

    add_service_errors = add_service_errors
