"""Encryption at rest (SPEC section 3): nothing the store holds is plain text.

- The key column is AES-SIV ciphertext (RFC 5297). SIV is deterministic, so the same email always maps to the same
  column value and can be looked up, yet it reveals nothing but equality and can be decrypted by the service.
- The code is AES-GCM ciphertext with a random nonce, bound (as associated data) to the row's type and key column,
  so a ciphertext copied into another row does not decrypt.
- Rotation: OTP_ENCRYPTION_KEYS lists keys newest first. Writes use the newest; reads try every key. Each
  configured key is 32 random bytes (urlsafe base64); HKDF derives the SIV and GCM keys from it, so one secret
  never serves two algorithms.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_CODE_FORMAT = "g1"  # prefix of stored code ciphertexts: format version


class DecryptionError(Exception):
    """A stored value does not decrypt under any configured key (wrong keys, or tampered data)."""


def new_key() -> str:
    """A fresh encryption key for OTP_ENCRYPTION_KEYS."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def parse_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ValueError("not urlsafe base64") from None
    if len(raw) != 32:
        raise ValueError("must decode to 32 bytes; make one with `otp-service new-encryption-key`")
    return raw


def _derive(secret: bytes, purpose: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=b"otp-service/" + purpose).derive(secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class _Key:
    key_id: str
    siv: AESSIV
    gcm: AESGCM
    counter: bytes = b""  # HMAC key of the abuse counters' names


class KeyRing:
    """The configured keys, newest first."""

    def __init__(self, secrets: list[str] | tuple[str, ...]):
        if not secrets:
            raise ValueError("at least one encryption key is required")
        self._keys = [self._load(secret) for secret in secrets]

    @staticmethod
    def _load(secret: str) -> _Key:
        raw = parse_key(secret)
        key_id = hashlib.sha256(_derive(raw, b"key-id", 32)).hexdigest()[:8]
        return _Key(
            key_id, AESSIV(_derive(raw, b"key-column", 64)), AESGCM(_derive(raw, b"otp-column", 32)),
            _derive(raw, b"counter-name", 32),
        )

    # -- the abuse counters' names --------------------------------------------------------------------------------
    def counter_name(self, subject: str) -> str:
        """A keyed hash (HMAC-SHA256, newest key) of what a limit counts, e.g. a client address or a number range:
        the store keeps no address, prefix or domain in plain text. After a key rotation counting starts afresh."""
        digest = hmac.new(self._keys[0].counter, subject.encode(), hashlib.sha256).digest()
        return _b64(digest[:18])

    # -- the key column -------------------------------------------------------------------------------------------
    def lookup_tokens(self, contact_type: str, key: str) -> list[str]:
        """The key column value under each configured key, newest first: where a row may be found."""
        return [self._token(k, contact_type, key) for k in self._keys]

    def lookup_token(self, contact_type: str, key: str) -> str:
        """The key column value new rows are written under."""
        return self._token(self._keys[0], contact_type, key)

    @staticmethod
    def _token(k: _Key, contact_type: str, key: str) -> str:
        return _b64(k.siv.encrypt(key.encode(), [b"otp-service/key", contact_type.encode()]))

    def reveal_key(self, contact_type: str, token: str) -> str:
        """The plain key behind a key column value (operator tooling only)."""
        data = _unb64(token)
        for k in self._keys:
            try:
                return k.siv.decrypt(data, [b"otp-service/key", contact_type.encode()]).decode()
            except InvalidTag:
                continue
        raise DecryptionError("key column value does not decrypt under any configured key")

    # -- the code column ------------------------------------------------------------------------------------------
    def encrypt_code(self, code: str, contact_type: str, token: str) -> str:
        k = self._keys[0]
        nonce = os.urandom(12)
        sealed = k.gcm.encrypt(nonce, code.encode(), self._bind(contact_type, token))
        return f"{_CODE_FORMAT}.{k.key_id}.{_b64(nonce + sealed)}"

    def decrypt_code(self, stored: str, contact_type: str, token: str) -> str:
        try:
            fmt, key_id, body = stored.split(".", 2)
            data = _unb64(body)
        except (ValueError, binascii.Error):
            raise DecryptionError("stored code is not in a known format") from None
        for k in self._keys:
            if fmt == _CODE_FORMAT and k.key_id == key_id:
                try:
                    return k.gcm.decrypt(data[:12], data[12:], self._bind(contact_type, token)).decode()
                except InvalidTag:
                    break
        raise DecryptionError("stored code does not decrypt under any configured key")

    @staticmethod
    def _bind(contact_type: str, token: str) -> bytes:
        return f"otp-service/code\x00{contact_type}\x00{token}".encode()
