"""Table-level declarations the privacy machinery reads, beside the column ones in
``core.datamap``: which retention rule governs a table's rows, and from which column its clock
runs. A table that holds personal columns needs none of this (the columns' rule applies); a
table of ids and times that must still expire (audit, exports) declares it here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from cloudphone.core.datamap import RETENTION_RULES

_KEY = "cloudphone.retention"


def retained(rule: str) -> dict[str, Any]:
    """``__table_args__ = {"info": retained("audit")}``: the table's rows follow ``rule``."""
    if rule not in RETENTION_RULES:
        raise ValueError(f"unknown retention rule {rule!r}")
    return {_KEY: rule}


def table_rule(table: Table) -> str | None:
    rule: str | None = table.info.get(_KEY)
    return rule
