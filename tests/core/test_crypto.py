"""Envelope encryption of secrets at rest (promise P16)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloudphone.core.crypto import CryptoError, Keyring, load_keyring


def test_seal_and_open_round_trip_with_context() -> None:
    ring = Keyring.parse(Keyring.generate_entry("k1"))
    sealed = ring.seal(b"alice-secret", b"push_instances:1")
    assert b"alice-secret" not in sealed.encode()
    assert sealed.startswith("v1.k1.")
    assert ring.open(sealed, b"push_instances:1") == b"alice-secret"


def test_every_seal_is_different() -> None:
    ring = Keyring.parse(Keyring.generate_entry())
    assert ring.seal(b"same") != ring.seal(b"same")


def test_wrong_context_or_tampering_fails() -> None:
    ring = Keyring.parse(Keyring.generate_entry())
    sealed = ring.seal(b"secret", b"row:1")
    with pytest.raises(CryptoError):
        ring.open(sealed, b"row:2")  # a ciphertext copied to another row does not open
    head, _, tail = sealed.rpartition(".")
    flipped = tail[:-2] + ("A" if tail[-2] != "A" else "B") + tail[-1]
    with pytest.raises(CryptoError):
        ring.open(f"{head}.{flipped}", b"row:1")
    with pytest.raises(CryptoError):
        ring.open("garbage")


def test_rotation_old_values_open_and_rewrap_moves_them_to_the_new_key() -> None:
    old = Keyring.generate_entry("k1")
    new = Keyring.generate_entry("k2")
    sealed = Keyring.parse(old).seal(b"secret")
    rotated = Keyring.parse(f"{new},{old}")
    assert rotated.open(sealed) == b"secret"
    rewrapped = rotated.rewrap(sealed)
    assert rewrapped.split(".")[1] == "k2"
    assert Keyring.parse(new).open(rewrapped) == b"secret"
    with pytest.raises(CryptoError, match="unknown master key id"):
        Keyring.parse(new).open(sealed)


def test_bad_keyrings_are_refused() -> None:
    with pytest.raises(CryptoError):
        Keyring.parse("")
    with pytest.raises(CryptoError):
        Keyring.parse("k1:c2hvcnQ")  # not 32 bytes
    with pytest.raises(CryptoError):
        Keyring.parse("no-colon")


@pytest.mark.promise("P16")
def test_generated_master_key_lives_in_a_private_file_outside_the_database(
    tmp_path: Path,
) -> None:
    ring = load_keyring(None, None, tmp_path)
    key_file = tmp_path / "master.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    again = load_keyring(None, None, tmp_path)
    assert again.open(ring.seal(b"x")) == b"x"  # the same key is reused, not regenerated
    with pytest.raises(CryptoError, match="does not exist"):
        load_keyring(None, tmp_path / "missing.key", tmp_path)
