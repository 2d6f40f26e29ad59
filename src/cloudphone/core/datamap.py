"""Personal data is declared where it is defined.

Every database column carries, in its SQLAlchemy ``info``, either ``personal(...)`` — its
data category (fideslang-style names), the purpose (the feature that needs it) and the
retention rule — or ``not_personal()``. The data map, retention and data-subject requests are
generated from these declarations, and a test fails on any column that declares neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import MetaData

_KEY = "cloudphone.datamap"

# Retention rules by name; the privacy package enforces them.
RETENTION_RULES: dict[str, str] = {
    "account": "kept while the account exists; erased with it",
    "device": "kept while the device is enrolled; erased when it is removed or the account is",
    "push_instance": "erased when the push instance expires (3-6 days) or push is disabled",
    "enrollment": "erased once used or 24 hours after issue",
    "stored_message": "erased on delivery or after 7 days",
    "audit": "kept 1 year, then purged",
}

# Purposes are the features of the account configuration, plus the service itself.
PURPOSES: frozenset[str] = frozenset(
    {
        "service",
        "push",
        "smart_contacts",
        "blf",
        "location",
        "attachments",
        "calendar",
        "analytics",
        "debug_logs",
        "security",
    }
)


@dataclass(frozen=True)
class PersonalData:
    category: str
    purpose: str
    retention: str
    encrypted: bool = False
    subject_key: bool = False  # True on the column that identifies the data subject


def personal(
    category: str,
    *,
    purpose: str,
    retention: str,
    encrypted: bool = False,
    subject_key: bool = False,
) -> dict[str, Any]:
    """``info=`` for a column holding personal data."""
    if not category.startswith("user."):
        raise ValueError(f"personal data categories start with 'user.': {category!r}")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    if retention not in RETENTION_RULES:
        raise ValueError(f"unknown retention rule {retention!r}")
    return {_KEY: PersonalData(category, purpose, retention, encrypted, subject_key)}


def not_personal() -> dict[str, Any]:
    """``info=`` for a column that holds no personal data (ids, times, configuration)."""
    return {_KEY: None}


@dataclass(frozen=True)
class DataMapEntry:
    table: str
    column: str
    category: str
    purpose: str
    retention: str
    retention_rule: str
    encrypted: bool


class UndeclaredColumn(Exception):
    pass


def undeclared_columns(metadata: MetaData) -> list[str]:
    return [
        f"{table.name}.{column.name}"
        for table in metadata.sorted_tables
        for column in table.columns
        if _KEY not in column.info
    ]


def declaration(info: dict[str, Any]) -> PersonalData | None:
    decl: PersonalData | None = info.get(_KEY)
    return decl


def build_datamap(metadata: MetaData) -> list[DataMapEntry]:
    """The inventory of personal data, straight from the column declarations."""
    missing = undeclared_columns(metadata)
    if missing:
        raise UndeclaredColumn("columns without a data-map declaration: " + ", ".join(missing))
    entries = []
    for table in metadata.sorted_tables:
        for column in table.columns:
            decl = declaration(column.info)
            if decl is None:
                continue
            entries.append(
                DataMapEntry(
                    table=table.name,
                    column=column.name,
                    category=decl.category,
                    purpose=decl.purpose,
                    retention=decl.retention,
                    retention_rule=RETENTION_RULES[decl.retention],
                    encrypted=decl.encrypted,
                )
            )
    return sorted(entries, key=lambda e: (e.purpose, e.table, e.column))


def render_markdown(entries: list[DataMapEntry]) -> str:
    lines = [
        "| table | column | category | purpose | retention | encrypted |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e.table} | {e.column} | {e.category} | {e.purpose} | "
            f"{e.retention}: {e.retention_rule} | {'yes' if e.encrypted else 'no'} |"
        )
    return "\n".join(lines)


def render_json(entries: list[DataMapEntry]) -> list[dict[str, Any]]:
    return [asdict(e) for e in entries]
