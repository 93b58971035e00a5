"""Who may use a key: its state, its secret, its access tokens. Each rule is written once, here, with the
contract's code and message, and called by the proxy (on its cached policies) and by the token exchange
(on the rows): both answer the same request the same way.

Times are Unix timestamps, so the proxy's immutable policies and the ORM's rows (through `timestamp`)
read alike.
"""

from dataclasses import dataclass
from datetime import datetime

from keys import crypto
from keys.errors import ERROR_STATUS

# A made-up key id can be long; a message repeats only this much of it.
SHOWN_KEY_ID_CHARS = 64


@dataclass(frozen=True, slots=True)
class Refusal:
    """One of the contract's error answers (status, code, message), for the proxy and the API alike."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    # What an allowlist refused (the origin, address, user agent, method, upstream), for the usage
    # counters; raw request text, bounded and cleaned where it is counted. "" for other refusals.
    detail: str = ""
    # The key's check that refused (one of validators.REPORT_ONLY_CHECKS) when the tenant may set it to
    # report only; "" for the rules report mode never relaxes (state, secret, tokens, path, body...).
    check: str = ""


def refusal(
    code: str, message: str, retry_after: int | None = None, *, detail: str = "", check: str = ""
) -> Refusal:
    return Refusal(ERROR_STATUS[code], code, message, retry_after, detail, check)


def timestamp(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def unknown_key(key_id: str) -> Refusal:
    return refusal("invalid_key", f"{key_id[:SHOWN_KEY_ID_CHARS]} is not a valid API key.")


def key_state_refusal(
    *, key_id: str, tenant_active: bool, revoked_at: float | None, expires_at: float | None, now: float
) -> Refusal | None:
    """None while the key may be used: its tenant active, the key neither revoked nor expired."""
    if not tenant_active:
        return refusal("tenant_suspended", f"The account that owns {key_id} is suspended.")
    if revoked_at is not None and revoked_at <= now:
        return refusal("key_revoked", f"{key_id} has been revoked.")
    if expires_at is not None and expires_at <= now:
        return refusal("key_expired", f"{key_id} has expired.")
    return None


def secret_matches(
    *,
    secret: str,
    secret_hash: str,
    previous_secret_hash: str,
    previous_secret_until: float | None,
    now: float,
) -> bool:
    """The key's secret, or its previous secret while the rotation's grace lasts; constant time, and a
    malformed value is refused before any hashing."""
    if not crypto.well_formed(secret, crypto.SECRET_PREFIX):
        return False
    if crypto.secret_matches(secret, secret_hash):
        return True
    return (
        previous_secret_until is not None
        and now < previous_secret_until
        and crypto.secret_matches(secret, previous_secret_hash)
    )


def wrong_secret(key_id: str) -> Refusal:
    return refusal("invalid_secret", f"That is not the secret of {key_id}.")


def token_refusal(
    *, key_id: str, token_key_id: str | None, revoked: bool, expires_at: float, now: float
) -> Refusal | None:
    """None for an access token that may call `key_id` now: issued for it, not revoked, not expired.
    `token_key_id` None: no such token."""
    if token_key_id is None or revoked or token_key_id != key_id:
        return refusal("invalid_token", f"The bearer token is not a valid access token for {key_id}.")
    if expires_at <= now:
        return refusal("token_expired", "The access token has expired; exchange a new one.")
    return None
