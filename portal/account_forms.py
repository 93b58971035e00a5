"""Forms of the account pages: asking for a password reset, and creating an account from an invitation."""

import unicodedata
from collections.abc import Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from portal.forms import NewPasswordForm, account_exists

UserModel = get_user_model()  # User is for annotations; this is the model the settings name


def _same_email(a: str, b: str) -> bool:
    return unicodedata.normalize("NFKC", a).casefold() == unicodedata.normalize("NFKC", b).casefold()


class RateLimitedPasswordResetForm(PasswordResetForm):
    """Django's reset request, refused with a form error (and no e-mail) while the caller is limited.

    Unlike Django's, it also mails users without a usable password: people added by e-mail (a new
    tenant's owner, a member added through the API) set their first password this way."""

    def __init__(self, *args: Any, limited: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limited = limited
        self.fields["email"].label = "E-mail"

    def clean(self) -> dict[str, Any]:
        if self.limited:
            raise ValidationError("Too many reset requests. Try again later.", code="rate_limited")
        super().clean()  # Form.clean returns self.cleaned_data (its stub allows an override's None)
        return self.cleaned_data

    def get_users(self, email: str) -> Iterator[User]:
        email_field = UserModel.get_email_field_name()
        users = UserModel._default_manager.filter(**{f"{email_field}__iexact": email, "is_active": True})
        return (user for user in users if _same_email(email, getattr(user, email_field) or ""))


class InvitationSignupForm(NewPasswordForm):
    """A new account for the invited e-mail address, which is fixed: only the password is chosen."""

    def __init__(self, *args: Any, email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict[str, Any]:
        super().clean()  # Form.clean returns self.cleaned_data (its stub allows an override's None)
        cleaned = self.cleaned_data
        if account_exists(self.email):
            raise ValidationError(
                "An account with this e-mail already exists: log in to accept the invitation.",
                code="account_exists",
            )
        self.check_new_password(self.email)
        return cleaned
