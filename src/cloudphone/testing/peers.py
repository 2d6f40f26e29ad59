"""Finding the real peers (Kamailio, SIPp, PostgreSQL, ...) that integration tests talk to.

Outside CI a missing peer skips the test; under ``CI=true`` it fails it, because CI installs
every peer and a skip there would hide a broken set-up.
"""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_peer(reason: str) -> None:
    """Skip (locally) or fail (under CI) a test whose peer is not available."""
    if under_ci():
        pytest.fail(f"peer missing under CI: {reason}")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """Path of an executable peer such as ``kamailio`` or ``sipp``; skip or fail if absent."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing_peer(f"{name} is not installed")
    raise AssertionError("unreachable")
