"""Envelope encryption for secrets at rest (promise P16).

Each value gets its own random 256-bit data key; the value is sealed with AES-256-GCM under
that key and the data key is wrapped (AES-256-GCM again) by a master key. Master keys live in a
file or the environment, never in the database; each has an id so keys can rotate: new values
use the first (current) key, old ones open with whichever key id they name.

Sealed format (ASCII, safe in any text column)::

    v1.<master key id>.<b64 nonce|wrapped data key>.<b64 nonce|ciphertext>
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE = 12


class CryptoError(Exception):
    """A sealed value cannot be opened: unknown key id, tampering, or a malformed value."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise CryptoError(f"master key {self.key_id!r} must be 32 bytes")
        if not self.key_id or "." in self.key_id or ":" in self.key_id:
            raise CryptoError("master key id must be non-empty and contain no '.' or ':'")


class Keyring:
    """Master keys by id; the first one encrypts, all of them decrypt."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise CryptoError("a keyring needs at least one master key")
        self._current = keys[0]
        self._by_id = {k.key_id: k for k in keys}

    @property
    def current_key_id(self) -> str:
        return self._current.key_id

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``kid:base64key[,kid:base64key…]`` (one per line or comma-separated)."""
        keys = []
        for item in text.replace("\n", ",").split(","):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            key_id, sep, material = item.partition(":")
            if not sep:
                raise CryptoError("keyring entries look like 'kid:base64key'")
            try:
                raw = _unb64(material.strip().replace("+", "-").replace("/", "_"))
            except ValueError as exc:
                raise CryptoError(f"master key {key_id!r} is not base64") from exc
            keys.append(MasterKey(key_id.strip(), raw))
        return cls(keys)

    @staticmethod
    def generate_entry(key_id: str = "k1") -> str:
        return f"{key_id}:{_b64(secrets.token_bytes(32))}"

    def seal(self, plaintext: bytes, context: bytes = b"") -> str:
        """Encrypt ``plaintext``; ``context`` (e.g. table and row id) is bound as AAD."""
        data_key = AESGCM.generate_key(bit_length=256)
        key_nonce, value_nonce = os.urandom(_NONCE), os.urandom(_NONCE)
        master = self._current
        wrapped = AESGCM(master.key).encrypt(key_nonce, data_key, master.key_id.encode())
        sealed = AESGCM(data_key).encrypt(value_nonce, plaintext, context)
        return ".".join(
            (_VERSION, master.key_id, _b64(key_nonce + wrapped), _b64(value_nonce + sealed))
        )

    def open(self, token: str, context: bytes = b"") -> bytes:
        try:
            version, key_id, wrapped_b64, sealed_b64 = token.split(".")
        except ValueError as exc:
            raise CryptoError("not a sealed value") from exc
        if version != _VERSION:
            raise CryptoError(f"unknown sealed-value version {version!r}")
        master = self._by_id.get(key_id)
        if master is None:
            raise CryptoError(f"unknown master key id {key_id!r}")
        try:
            wrapped, sealed = _unb64(wrapped_b64), _unb64(sealed_b64)
            data_key = AESGCM(master.key).decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], key_id.encode()
            )
            return AESGCM(data_key).decrypt(sealed[:_NONCE], sealed[_NONCE:], context)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("sealed value failed authentication") from exc

    def rewrap(self, token: str) -> str:
        """Re-wrap a value's data key under the current master key (rotation) without
        touching the ciphertext of the value itself."""
        version, key_id, wrapped_b64, sealed_b64 = token.split(".")
        if key_id == self._current.key_id:
            return token
        master = self._by_id.get(key_id)
        if master is None:
            raise CryptoError(f"unknown master key id {key_id!r}")
        wrapped = _unb64(wrapped_b64)
        data_key = AESGCM(master.key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], key_id.encode())
        nonce = os.urandom(_NONCE)
        current = self._current
        rewrapped = AESGCM(current.key).encrypt(nonce, data_key, current.key_id.encode())
        return ".".join((version, current.key_id, _b64(nonce + rewrapped), sealed_b64))


def load_keyring(inline: str | None, path: Path | None, data_dir: Path) -> Keyring:
    """The keyring from settings. With neither set, a key file is created once under the data
    directory (mode 0600), next to but never inside the database."""
    if inline:
        return Keyring.parse(inline)
    key_file = path or data_dir / "master.key"
    if not key_file.exists():
        if path is not None:
            raise CryptoError(f"master key file {key_file} does not exist")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Keyring.generate_entry() + "\n")
    return Keyring.parse(key_file.read_text())
