"""Forms of the account pages: asking for a password reset, and creating an account from an invitation."""

import unicodedata

from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordResetForm
from django.core.exceptions import ValidationError

from portal.forms import NewPasswordForm, account_exists

User = get_user_model()


def _same_email(a: str, b: str) -> bool:
    return unicodedata.normalize("NFKC", a).casefold() == unicodedata.normalize("NFKC", b).casefold()


class RateLimitedPasswordResetForm(PasswordResetForm):
    """Django's reset request, refused with a form error (and no e-mail) while the caller is limited.

    Unlike Django's, it also mails users without a usable password: people added by e-mail (a new
    tenant's owner, a member added through the API) set their first password this way."""

    def __init__(self, *args, limited: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limited = limited
        self.fields["email"].label = "E-mail"

    def clean(self) -> dict:
        if self.limited:
            raise ValidationError("Too many reset requests. Try again later.", code="rate_limited")
        return super().clean()

    def get_users(self, email: str):
        email_field = User.get_email_field_name()
        users = User._default_manager.filter(**{f"{email_field}__iexact": email, "is_active": True})
        return (user for user in users if _same_email(email, getattr(user, email_field) or ""))


class InvitationSignupForm(NewPasswordForm):
    """A new account for the invited e-mail address, which is fixed: only the password is chosen."""

    def __init__(self, *args, email: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self) -> dict:
        cleaned = super().clean()
        if account_exists(self.email):
            raise ValidationError(
                "An account with this e-mail already exists: log in to accept the invitation.",
                code="account_exists",
            )
        self.check_new_password(self.email)
        return cleaned
