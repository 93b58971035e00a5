"""Identifiers, secrets and tokens (DESIGN.md "Identifiers and secrets"), hashing, credential encryption."""

import re

import pytest
from cryptography.fernet import Fernet
from django.test import override_settings

from keys import crypto

KINDS = [
    # (generator, prefix, minimum number of base62 characters after the prefix, per DESIGN.md)
    (crypto.new_key_id, crypto.KEY_ID_PREFIX, 22),
    (crypto.new_secret, crypto.SECRET_PREFIX, 32),
    (crypto.new_access_token, crypto.ACCESS_TOKEN_PREFIX, 32),
    (crypto.new_management_token, crypto.MANAGEMENT_TOKEN_PREFIX, 32),
]
KIND_IDS = ["key_id", "secret", "access_token", "management_token"]


def flip(value: str, position: int) -> str:
    """The value with one base62 character changed."""
    replacement = "A" if value[position] != "A" else "B"
    return value[:position] + replacement + value[position + 1 :]


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
def test_generated_values_have_their_prefix_and_enough_base62_characters(generate, prefix, minimum):
    value = generate()
    assert value.startswith(prefix)
    assert re.fullmatch(rf"{prefix}[0-9A-Za-z]{{{minimum},}}", value)
    assert crypto.well_formed(value, prefix)


def test_documented_prefixes():
    assert [prefix for _, prefix, _ in KINDS] == ["pk_", "sk_", "at_", "mt_"]


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
def test_generated_values_are_unique(generate, prefix, minimum):
    values = {generate() for _ in range(200)}
    assert len(values) == 200


def test_secret_body_uses_the_whole_base62_alphabet():
    bodies = "".join(crypto.new_secret()[3:-6] for _ in range(200))
    assert set(bodies) == set(crypto.BASE62)


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
def test_value_ends_in_the_checksum_of_prefix_and_body(generate, prefix, minimum):
    value = generate()
    body, check = value[: -crypto.CHECKSUM_LENGTH], value[-crypto.CHECKSUM_LENGTH :]
    assert check == crypto.checksum(body)


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("position", [3, 10, -7, -1])
def test_one_flipped_character_is_refused(generate, prefix, minimum, position):
    value = generate()
    assert not crypto.well_formed(flip(value, position % len(value)), prefix)


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
def test_swapped_adjacent_characters_are_refused(generate, prefix, minimum):
    value = generate()
    for i in range(3, len(value) - 1):
        if value[i] != value[i + 1]:
            swapped = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
            assert not crypto.well_formed(swapped, prefix)
            return
    pytest.fail("no two adjacent characters differ")  # pragma: no cover


def hostile_variants(value: str) -> list[str]:
    return [
        value[:-1],  # truncated
        value[:-6],  # checksum cut off
        value[:20],
        value + "0",  # extended
        value + "\n",
        " " + value,
        value.upper(),
        value.replace("_", "-", 1),
        value[3:],  # no prefix
        value[:5] + "é" + value[6:],
        value[:5] + "\uff10" + value[6:],  # a full-width digit
        value[:5] + "\u0000" + value[6:],
        value[:5] + "=" + value[6:],
        "",
    ]


@pytest.mark.parametrize(("generate", "prefix", "minimum"), KINDS, ids=KIND_IDS)
def test_truncated_extended_and_foreign_characters_are_refused(generate, prefix, minimum):
    value = generate()
    for variant in hostile_variants(value):
        assert not crypto.well_formed(variant, prefix), repr(variant)


@pytest.mark.parametrize("value", [None, 42, b"sk_x", ["sk_"], {"sk_": 1}])
def test_values_that_are_not_text_are_refused(value):
    assert not crypto.well_formed(value, crypto.SECRET_PREFIX)


@pytest.mark.parametrize(
    ("generate", "wrong_prefix"),
    [
        (crypto.new_secret, crypto.ACCESS_TOKEN_PREFIX),
        (crypto.new_access_token, crypto.SECRET_PREFIX),
        (crypto.new_access_token, crypto.MANAGEMENT_TOKEN_PREFIX),
        (crypto.new_management_token, crypto.ACCESS_TOKEN_PREFIX),
        (crypto.new_key_id, crypto.SECRET_PREFIX),
    ],
)
def test_a_value_of_one_kind_is_refused_as_another(generate, wrong_prefix):
    value = generate()
    assert not crypto.well_formed(value, wrong_prefix)
    # Relabelled with the other prefix it still fails: the checksum covers the prefix.
    assert not crypto.well_formed(wrong_prefix + value[3:], wrong_prefix)


def test_a_value_built_with_a_valid_checksum_is_well_formed():
    body = "sk_" + "a" * 32
    assert crypto.well_formed(body + crypto.checksum(body), crypto.SECRET_PREFIX)


def test_checksum_is_six_base62_characters():
    for text in ["", "sk_", "sk_" + "z" * 32, "pk_" + "0" * 24]:
        assert re.fullmatch(r"[0-9A-Za-z]{6}", crypto.checksum(text))


# --- hashing ---------------------------------------------------------------------------------------


def test_hash_secret_is_sha256_hex_and_never_the_secret():
    secret = crypto.new_secret()
    digest = crypto.hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == crypto.hash_secret(secret)
    assert secret not in digest


def test_secret_matches_its_own_hash_only():
    secret, other = crypto.new_secret(), crypto.new_secret()
    stored = crypto.hash_secret(secret)
    assert crypto.secret_matches(secret, stored)
    assert not crypto.secret_matches(other, stored)
    assert not crypto.secret_matches(flip(secret, 10), stored)
    assert not crypto.secret_matches(secret, stored.upper())


@pytest.mark.parametrize("stored", ["", None])
def test_no_stored_hash_matches_nothing(stored):
    assert not crypto.secret_matches("", stored)
    assert not crypto.secret_matches(crypto.new_secret(), stored)


# --- encryption of upstream credentials ------------------------------------------------------------


@pytest.fixture
def old_key():
    return Fernet.generate_key().decode()


@pytest.fixture
def new_key():
    return Fernet.generate_key().decode()


def test_encrypt_decrypt_round_trip_and_ciphertext_hides_the_value():
    ciphertext = crypto.encrypt("upstream-password-ü")
    assert "upstream-password" not in ciphertext
    assert crypto.decrypt(ciphertext) == "upstream-password-ü"


def test_encrypting_twice_gives_different_ciphertexts():
    assert crypto.encrypt("same value") != crypto.encrypt("same value")


def test_empty_credential_stays_empty():
    assert crypto.encrypt("") == ""
    assert crypto.decrypt("") == ""
    assert crypto.reencrypt("") == ""


def test_configured_key_encrypts_and_decrypts(old_key):
    with override_settings(KEYS_ENCRYPTION_KEYS=[old_key]):
        ciphertext = crypto.encrypt("s3cret")
        assert crypto.decrypt(ciphertext) == "s3cret"
    assert Fernet(old_key.encode()).decrypt(ciphertext.encode()) == b"s3cret"


def test_rotation_old_ciphertext_decrypts_while_the_old_key_is_listed(old_key, new_key):
    with override_settings(KEYS_ENCRYPTION_KEYS=[old_key]):
        old_ciphertext = crypto.encrypt("s3cret")
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key, old_key]):
        assert crypto.decrypt(old_ciphertext) == "s3cret"
        new_ciphertext = crypto.encrypt("fresh")
    # The first key encrypts.
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key]):
        assert crypto.decrypt(new_ciphertext) == "fresh"


def test_reencrypt_moves_a_credential_to_the_new_key(old_key, new_key):
    with override_settings(KEYS_ENCRYPTION_KEYS=[old_key]):
        old_ciphertext = crypto.encrypt("s3cret")
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key, old_key]):
        rotated = crypto.reencrypt(old_ciphertext)
    assert rotated != old_ciphertext
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key]):
        assert crypto.decrypt(rotated) == "s3cret"
        with pytest.raises(ValueError):
            crypto.decrypt(old_ciphertext)


def test_decrypt_with_a_wrong_key_raises_value_error(old_key, new_key):
    with override_settings(KEYS_ENCRYPTION_KEYS=[old_key]):
        ciphertext = crypto.encrypt("s3cret")
    with override_settings(KEYS_ENCRYPTION_KEYS=[new_key]):
        with pytest.raises(ValueError, match="cannot be decrypted"):
            crypto.decrypt(ciphertext)


@pytest.mark.parametrize("ciphertext", ["not a fernet token", "gAAAAABbroken", "s3cret"])
def test_decrypt_of_garbage_raises_value_error(ciphertext):
    with pytest.raises(ValueError):
        crypto.decrypt(ciphertext)


def test_tampered_ciphertext_is_refused():
    ciphertext = crypto.encrypt("s3cret")
    position = len(ciphertext) // 2
    tampered = (
        ciphertext[:position] + ("A" if ciphertext[position] != "A" else "B") + ciphertext[position + 1 :]
    )
    with pytest.raises(ValueError):
        crypto.decrypt(tampered)


@override_settings(KEYS_ENCRYPTION_KEYS=[])
def test_without_configured_keys_the_key_derives_from_secret_key():
    with override_settings(SECRET_KEY="first-secret-key"):
        ciphertext = crypto.encrypt("s3cret")
        assert crypto.decrypt(ciphertext) == "s3cret"
    with override_settings(SECRET_KEY="second-secret-key"):
        with pytest.raises(ValueError):
            crypto.decrypt(ciphertext)
