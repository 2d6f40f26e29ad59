"""Personal fields sealed under a per-subject data key (crypto-shredding, promise P19).

Each data subject (an account) has one random 256-bit data key, stored only wrapped by the
master keyring in ``subject_keys``. A sealed field's value is AES-256-GCM under that key, bound
(AAD) to its table, column and subject. Erasing the subject deletes the wrapped key, so any
copy of its sealed values left behind — freed pages, WAL, dead tuples, export files, logs of a
replica — is unreadable. A backup taken before the erasure still holds the wrapped key: after a
restore the erasure ledger is replayed (``cloudphone privacy replay-erasures``, and the periodic
job), which shreds it again; a backup never restored is only readable with the master key,
which is kept outside backups.

To the rest of the code a sealed field is a plain attribute (``account.address_of_record``):
the value is sealed in ``before_flush`` and opened when the row loads, so domains that read or
write it need not know. Equality lookups go through a keyed blind index (HMAC-SHA256 under a key
kept outside the database), which also carries uniqueness constraints:
``Account.address_of_record == aor`` compiles to ``Account.aor_index == blind_index(...)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import weakref
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import ColumnElement, String, Text, delete, event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloudphone.core.clock import Clock
from cloudphone.core.crypto import CryptoError, Keyring
from cloudphone.core.datamap import not_personal
from cloudphone.store.db import Base, UTCDateTime, new_id

_VERSION = "sk1"
_NONCE = 12
_PENDING = "\x00pending-seal"  # stands in for a new plaintext until the flush seals it
VAULT_INFO_KEY = "cloudphone.vault"
SEALED_INFO_KEY = "cloudphone.sealed"

T = TypeVar("T", str, str | None)


class SubjectKey(Base):
    """A data subject's data key, wrapped by the master keyring. Deleting the row shreds the
    subject's sealed data everywhere it was copied."""

    __tablename__ = "subject_keys"

    # No foreign key: the key is created in the flush that inserts the subject's first row.
    subject_id: Mapped[str] = mapped_column(String(32), primary_key=True, info=not_personal())
    tenant_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    wrapped_key: Mapped[str] = mapped_column(Text, info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())


def sealed() -> dict[str, Any]:
    """Merge into a column's ``info`` beside ``personal(...)``: the value is sealed under the
    subject key (the export opens it; erasure shreds it)."""
    return {SEALED_INFO_KEY: True}


def is_sealed(info: dict[str, Any]) -> bool:
    return bool(info.get(SEALED_INFO_KEY))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- the blind index -----------------------------------------------------------------------

_index_key: bytes | None = None


def configure_blind_index(key: bytes) -> None:
    """Set the process's blind-index key (``Runtime.build`` does, from ``load_index_key``).
    Class-level comparisons compile without a session, so the key is process-wide."""
    global _index_key
    if len(key) < 32:
        raise CryptoError("the blind-index key must be at least 32 bytes")
    _index_key = key


def blind_index(field: str, value: str) -> str:
    if _index_key is None:
        raise CryptoError("no blind-index key configured (build a Runtime first)")
    return hmac.new(_index_key, f"{field}\x00{value}".encode(), hashlib.sha256).hexdigest()


def load_index_key(path: Path) -> bytes:
    """The blind-index key file (created once, mode 0600), kept beside the master key and,
    like it, outside database backups."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(_b64(secrets.token_bytes(32)) + "\n")
    return _unb64(path.read_text().strip())


# -- sealed attributes ----------------------------------------------------------------------

_FIELDS: dict[type, list[SealedField[Any]]] = {}


class _SealedComparison:
    """``Model.field`` at class level: only equality, through the blind index."""

    def __init__(self, owner: type, field: SealedField[Any]) -> None:
        self._owner, self._field = owner, field

    def __eq__(self, other: object) -> ColumnElement[bool]:  # type: ignore[override]
        if self._field.index_attr is None or not isinstance(other, str):
            raise TypeError(f"{self._owner.__name__}.{self._field.name} is sealed: no lookups")
        column = getattr(self._owner, self._field.index_attr)
        qualified = self._field.qualified_name(self._owner)
        result: ColumnElement[bool] = column == blind_index(qualified, other)
        return result

    __hash__ = None  # type: ignore[assignment]

    @property
    def key(self) -> str:
        """The attribute name, as ``InstrumentedAttribute.key`` would give it."""
        return self._field.name


class SealedField(Generic[T]):
    """A plain-text attribute whose column (``column_attr``) holds the sealed value."""

    def __init__(
        self, column_attr: str, *, subject_attr: str, index_attr: str | None = None
    ) -> None:
        self.column_attr = column_attr
        self.subject_attr = subject_attr
        self.index_attr = index_attr
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self._plain = f"_plain_{name}"
        _FIELDS.setdefault(owner, []).append(self)

    def column_name(self, owner: type) -> str:
        mapped = getattr(owner, self.column_attr)
        return str(mapped.property.columns[0].name)

    @overload
    def __get__(self, obj: None, owner: type) -> _SealedComparison: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return _SealedComparison(owner, self)
        return obj.__dict__.get(self._plain)

    def __set__(self, obj: object, value: T) -> None:
        obj.__dict__[self._plain] = value
        setattr(obj, self.column_attr, None if value is None else _PENDING)
        if self.index_attr is not None:
            index = None if value is None else blind_index(self.qualified_name(type(obj)), value)
            setattr(obj, self.index_attr, index)

    def qualified_name(self, owner: type) -> str:
        return f"{owner.__table__.name}.{self.column_name(owner)}"  # type: ignore[attr-defined]

    def _opened(self, obj: object, value: str | None) -> None:
        obj.__dict__[self._plain] = value


def sealed_fields(model: type) -> list[SealedField[Any]]:
    return _FIELDS.get(model, [])


def _aad(table: str, column: str, subject_id: str) -> bytes:
    return f"{table}.{column}:{subject_id}".encode()


# -- the vault ------------------------------------------------------------------------------


class SubjectVault:
    """Creates, opens and shreds subject keys; seals and opens values. Synchronous on a
    ``Connection`` because it runs inside ORM flush and load events; async callers reach it
    through ``AsyncSession.run_sync``."""

    def __init__(self, keyring: Keyring, clock: Clock) -> None:
        self._keyring = keyring
        self._clock = clock
        # Unwrapped keys cached per session only: a shred is seen by every new session.
        self._cache: weakref.WeakKeyDictionary[Session, dict[str, bytes | None]] = (
            weakref.WeakKeyDictionary()
        )

    def _key(
        self, session: Session, subject_id: str, tenant_id: str | None, create: bool
    ) -> bytes | None:
        cache = self._cache.setdefault(session, {})
        if subject_id in cache and (cache[subject_id] is not None or not create):
            return cache[subject_id]
        conn = session.connection()
        wrapped = conn.execute(
            select(SubjectKey.wrapped_key).where(SubjectKey.subject_id == subject_id)
        ).scalar_one_or_none()
        key: bytes | None
        if wrapped is not None:
            key = self._keyring.open(wrapped, b"subject-key:" + subject_id.encode())
        elif create:
            if tenant_id is None:
                raise CryptoError("a new subject key needs its tenant")
            key = AESGCM.generate_key(bit_length=256)
            conn.execute(
                insert(SubjectKey).values(
                    subject_id=subject_id,
                    tenant_id=tenant_id,
                    wrapped_key=self._keyring.seal(key, b"subject-key:" + subject_id.encode()),
                    created_at=self._clock.now(),
                )
            )
        else:
            key = None
        cache[subject_id] = key
        return key

    def seal(
        self,
        session: Session,
        subject_id: str,
        tenant_id: str,
        table: str,
        column: str,
        plaintext: str,
    ) -> str:
        key = self._key(session, subject_id, tenant_id, create=True)
        assert key is not None
        nonce = os.urandom(_NONCE)
        sealed_value = AESGCM(key).encrypt(
            nonce, plaintext.encode(), _aad(table, column, subject_id)
        )
        return f"{_VERSION}.{_b64(nonce + sealed_value)}"

    def open(
        self, session: Session, subject_id: str, table: str, column: str, token: str | None
    ) -> str | None:
        """The plaintext, or None when there is none or the subject's key was shredded."""
        if token is None or token == _PENDING:
            return None
        if token == "":
            return ""  # a column default never sealed: nothing to open
        key = self._key(session, subject_id, None, create=False)
        if key is None:
            return None
        version, _, body = token.partition(".")
        if version != _VERSION:
            raise CryptoError("not a subject-sealed value")
        raw = _unb64(body)
        try:
            plain = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], _aad(table, column, subject_id))
        except InvalidTag as exc:
            raise CryptoError("sealed value failed authentication") from exc
        return plain.decode()

    def shred(self, conn: Connection, subject_ids: Iterable[str]) -> int:
        ids = list(subject_ids)
        if not ids:
            return 0
        for cache in self._cache.values():
            for subject_id in ids:
                cache.pop(subject_id, None)
        result = conn.execute(delete(SubjectKey).where(SubjectKey.subject_id.in_(ids)))
        return int(result.rowcount or 0)


def _vault(session: Session) -> SubjectVault:
    vault = session.info.get(VAULT_INFO_KEY)
    if vault is None:
        raise CryptoError("sealed fields need the subject vault (sessions from Runtime.build)")
    assert isinstance(vault, SubjectVault)
    return vault


@event.listens_for(Session, "before_flush")
def _seal_pending(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in [*session.new, *session.dirty]:
        for field in sealed_fields(type(obj)):
            if getattr(obj, field.column_attr) != _PENDING:
                continue
            subject = getattr(obj, field.subject_attr)
            if subject is None and field.subject_attr == "id":
                subject = new_id()  # the row's own id is its subject: assign it now
                obj.id = subject
            table = type(obj).__table__.name
            setattr(
                obj,
                field.column_attr,
                _vault(session).seal(
                    session,
                    subject,
                    obj.tenant_id,
                    table,
                    field.column_name(type(obj)),
                    obj.__dict__[f"_plain_{field.name}"],
                ),
            )


def _open_loaded(target: Any, context: Any, *_attrs: Any) -> None:
    fields = sealed_fields(type(target))
    if not fields:
        return
    session = context.session
    vault = _vault(session)
    table = type(target).__table__.name
    for field in fields:
        field._opened(
            target,
            vault.open(
                session,
                target.__dict__.get(field.subject_attr) or "",
                table,
                field.column_name(type(target)),
                target.__dict__.get(field.column_attr),
            ),
        )


event.listen(Base, "load", _open_loaded, propagate=True)
event.listen(Base, "refresh", _open_loaded, propagate=True)
