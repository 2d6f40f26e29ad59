"""Table-level declarations the privacy machinery reads, beside the column ones in
``core.datamap``: which retention rule governs a table's rows, and from which column its clock
runs. A table that holds personal columns needs none of this (the columns' rule applies); a
table of ids and times that must still expire (audit, exports) declares it here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from cloudphone.core.datamap import RETENTION_RULES

_KEY = "cloudphone.retention"
_HOLD_KEY = "cloudphone.retention.subject_column"


def retained(rule: str, *, subject_column: str | None = None) -> dict[str, Any]:
    """``__table_args__ = ({"info": retained("audit")},)``: the table's rows follow ``rule``.
    ``subject_column`` names the column a legal hold on a subject is matched against when the
    table has no subject link of its own (the audit trail's ``object_id``)."""
    if rule not in RETENTION_RULES:
        raise ValueError(f"unknown retention rule {rule!r}")
    info: dict[str, Any] = {_KEY: rule}
    if subject_column is not None:
        info[_HOLD_KEY] = subject_column
    return info


def table_rule(table: Table) -> str | None:
    rule: str | None = table.info.get(_KEY)
    return rule


def hold_column(table: Table) -> str | None:
    name: str | None = table.info.get(_HOLD_KEY)
    return name
