"""The erasure ledger (P19): a record, outside the database, of which subjects were erased.

A restored backup brings erased subjects back; ``replay`` finds them again and erases them
anew. The ledger names no one: each entry carries HMAC-SHA256(ledger key, subject id), the
time and which tables were touched. The ledger key sits sealed by the master keyring in the
ledger's first line, so the file is self-contained yet useless without the master key.
The file is append-only JSON lines, flushed and fsynced per entry; keep it (like the master
key) outside database backups.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cloudphone.core.crypto import Keyring

_CONTEXT = b"erasure-ledger-key"


@dataclass(frozen=True)
class LedgerEntry:
    subject_hash: str
    at: str
    what: list[str]


class ErasureLedger:
    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = path
        self._keyring = keyring
        self._key: bytes | None = None

    def _ledger_key(self) -> bytes:
        if self._key is not None:
            return self._key
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            key = secrets.token_bytes(32)
            header = {"ledger_key": self._keyring.seal(key, _CONTEXT)}
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(header) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        with self.path.open() as handle:
            header = json.loads(handle.readline())
        self._key = self._keyring.open(header["ledger_key"], _CONTEXT)
        return self._key

    def subject_hash(self, subject_id: str) -> str:
        return hmac.new(self._ledger_key(), subject_id.encode(), hashlib.sha256).hexdigest()

    def append(self, subject_id: str, at: datetime, what: list[str]) -> None:
        entry = {"subject": self.subject_hash(subject_id), "at": at.isoformat(), "what": what}
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self) -> list[LedgerEntry]:
        if not self.path.exists():
            return []
        with self.path.open() as handle:
            handle.readline()  # the key header
            return [
                LedgerEntry(e["subject"], e["at"], list(e["what"]))
                for e in (json.loads(line) for line in handle if line.strip())
            ]

    def erased(self) -> set[str]:
        return {e.subject_hash for e in self.entries()}
