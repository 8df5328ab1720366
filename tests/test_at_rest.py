"""Nothing is stored in plain text: the database file holds no email, phone or code (SPEC section 3)."""
from __future__ import annotations

import sqlite3

import pytest

from otp_service.adapters.crypto import KeyRing, new_key

from .support import Api, unique_email, unique_phone, wrong_code


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_the_database_file_holds_no_email_phone_or_code(make_app, channel, tmp_path, clock):
    api = Api(make_app(OTP_RESEND_COOLDOWN_SECONDS="0", OTP_MAX_SENDS="2").test_client())
    email, phone = unique_email(), unique_phone()
    api.generate(email)
    api.generate("+91" + phone, type_="phone")
    api.verify(email, wrong_code(channel.last_code(email)))
    blocked = unique_email()
    for _ in range(3):
        api.generate(blocked)  # the third send blocks the key: its row holds the block, and a row in blocked_key
    db = tmp_path / "otp.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
        assert conn.execute("SELECT count(*) FROM blocked_key").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM otp").fetchone()[0] == 3
        held = conn.execute("SELECT count(*) FROM otp WHERE blocked_until IS NOT NULL AND otp IS NULL").fetchone()
        assert held[0] == 1
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("otp.db*") if not p.name.endswith(".key"))
    secrets = [email, blocked, phone, "+91" + phone, channel.last_code(email), channel.last_code("+91" + phone)]
    secrets += [s.split("@")[0] for s in (email, blocked)]
    for secret in secrets:
        assert secret.encode() not in raw, "plain text found in the database file"


def test_key_column_is_deterministic_and_code_column_is_not():
    ring = KeyRing([new_key()])
    assert ring.lookup_token("email", "a@b.com") == ring.lookup_token("email", "a@b.com")
    assert ring.lookup_token("email", "a@b.com") != ring.lookup_token("phone", "a@b.com")
    token = ring.lookup_token("email", "a@b.com")
    first, second = ring.encrypt_code("123456", "email", token), ring.encrypt_code("123456", "email", token)
    assert first != second
    assert ring.decrypt_code(first, "email", token) == "123456"


def test_a_code_ciphertext_does_not_decrypt_in_another_row():
    from otp_service.adapters.crypto import DecryptionError

    ring = KeyRing([new_key()])
    mine, theirs = ring.lookup_token("email", "a@b.com"), ring.lookup_token("email", "c@d.com")
    sealed = ring.encrypt_code("123456", "email", mine)
    with pytest.raises(DecryptionError):
        ring.decrypt_code(sealed, "email", theirs)


def test_rotation_old_key_still_reads_new_writes_use_the_new_key():
    old, new = new_key(), new_key()
    before = KeyRing([old])
    token = before.lookup_token("phone", "+919876543210")
    sealed = before.encrypt_code("654321", "phone", token)
    after = KeyRing([new, old])
    assert after.lookup_tokens("phone", "+919876543210")[1] == token
    assert after.decrypt_code(sealed, "phone", token) == "654321"
    assert after.lookup_token("phone", "+919876543210") != token
    resealed = after.encrypt_code("654321", "phone", token)
    assert KeyRing([new]).decrypt_code(resealed, "phone", token) == "654321"


def test_rotation_through_the_api_keeps_live_codes_verifying(tmp_path, channel, clock):
    """A code sent before OTP_ENCRYPTION_KEYS gained a new first key still verifies after."""
    from otp_service.domain.contacts import ContactType
    from otp_service.entrypoints.app import create_app

    from .support import settings_for

    old, new = new_key(), new_key()
    db = str(tmp_path / "rot.db")

    def app(keys):
        return create_app(settings_for({"OTP_SQLITE_PATH": db, "OTP_ENCRYPTION_KEYS": keys,
                                        "OTP_RESEND_COOLDOWN_SECONDS": "0"}),
                          channels={ContactType.EMAIL: channel, ContactType.PHONE: channel}, clock=clock)

    email = unique_email()
    Api(app(old).test_client()).generate(email)
    code = channel.last_code(email)
    rotated = Api(app(f"{new},{old}").test_client())
    resent = rotated.generate(email)  # a resend finds the old row and sends the same code
    assert resent.status_code == 200, resent.get_json()
    assert channel.last_code(email) == code
    assert rotated.verify(email, code).status_code == 200
