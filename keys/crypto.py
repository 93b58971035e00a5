"""Identifiers, secrets, checksums, hashing and the encryption of upstream credentials.

Secrets and tokens look like `sk_` + 32 random base62 characters + a 6-character checksum (the
CRC32 of the prefix and body, in base62), as GitHub's token formats do: a malformed or mistyped
value is refused before any lookup, and a scanner can recognise a leaked one by its pattern.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_LENGTH = 6

KEY_ID_PREFIX = "pk_"
SECRET_PREFIX = "sk_"  # noqa: S105 - a prefix, not a secret
ACCESS_TOKEN_PREFIX = "at_"  # noqa: S105
MANAGEMENT_TOKEN_PREFIX = "mt_"  # noqa: S105
INVITATION_PREFIX = "iv_"
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the signing secret of a webhook endpoint (Stripe's prefix)

KEY_ID_BODY_LENGTH = 24
SECRET_BODY_LENGTH = 32

_PATTERNS = {
    prefix: re.compile(rf"^{prefix}[0-9A-Za-z]{{{body}}}[0-9A-Za-z]{{{CHECKSUM_LENGTH}}}$")
    for prefix, body in (
        (KEY_ID_PREFIX, KEY_ID_BODY_LENGTH),
        (SECRET_PREFIX, SECRET_BODY_LENGTH),
        (ACCESS_TOKEN_PREFIX, SECRET_BODY_LENGTH),
        (MANAGEMENT_TOKEN_PREFIX, SECRET_BODY_LENGTH),
        (INVITATION_PREFIX, SECRET_BODY_LENGTH),
        (WEBHOOK_SECRET_PREFIX, SECRET_BODY_LENGTH),
    )
}


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def checksum(text: str) -> str:
    """The 6-character base62 CRC32 of `text`."""
    return _base62(binascii.crc32(text.encode()), CHECKSUM_LENGTH)


def _generate(prefix: str, body_length: int) -> str:
    body = "".join(secrets.choice(BASE62) for _ in range(body_length))
    return f"{prefix}{body}{checksum(prefix + body)}"


def well_formed(value: str, prefix: str) -> bool:
    """True when `value` has the prefix, length, alphabet and checksum of its kind."""
    if not isinstance(value, str) or not _PATTERNS[prefix].match(value):
        return False
    body, check = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(checksum(body), check)


def new_key_id() -> str:
    return _generate(KEY_ID_PREFIX, KEY_ID_BODY_LENGTH)


def new_secret() -> str:
    return _generate(SECRET_PREFIX, SECRET_BODY_LENGTH)


def new_access_token() -> str:
    return _generate(ACCESS_TOKEN_PREFIX, SECRET_BODY_LENGTH)


def new_management_token() -> str:
    return _generate(MANAGEMENT_TOKEN_PREFIX, SECRET_BODY_LENGTH)


def new_invitation_token() -> str:
    """The secret part of an invitation link: single use, stored only as its hash."""
    return _generate(INVITATION_PREFIX, SECRET_BODY_LENGTH)


def new_webhook_secret() -> str:
    """A webhook endpoint's signing secret: stored encrypted (it must be read to sign), shown once."""
    return _generate(WEBHOOK_SECRET_PREFIX, SECRET_BODY_LENGTH)


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The `Webhook-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" under secret>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def hash_secret(value: str) -> str:
    """SHA-256 hex digest. The values hashed are 190-bit random strings, so a fast hash is safe and a
    slow password hash would only make every proxied request slow."""
    return hashlib.sha256(value.encode()).hexdigest()


def secret_matches(value: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    if not stored_hash:
        return False
    return hmac.compare_digest(hash_secret(value), stored_hash)


def _fernet() -> MultiFernet:
    keys = list(settings.KEYS_ENCRYPTION_KEYS)
    if not keys:
        derived = hashlib.sha256(b"keys.crypto.credentials:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(key.encode()) for key in keys])


def encrypt(plaintext: str) -> str:
    """Encrypt an upstream credential for storage; empty stays empty."""
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt a stored upstream credential; raises ValueError when no configured key opens it."""
    if not ciphertext:
        return ""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("credential cannot be decrypted with the configured KEYS_ENCRYPTION_KEYS") from exc


def reencrypt(ciphertext: str) -> str:
    """Re-encrypt under the first configured key (after a key rotation)."""
    if not ciphertext:
        return ""
    return _fernet().rotate(ciphertext.encode()).decode()
