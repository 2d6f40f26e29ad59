"""Finding a data subject's rows from the data map alone.

The subject table is the one whose column is declared ``subject_key=True`` (accounts). Every
other table reaches the subject through a foreign key to it, or, for records that must outlive
the account (requests, holds), through a plain ``account_id`` column. A table with personal
columns and neither is a gap: export and erasure would miss it, and a test says so.
"""

from __future__ import annotations

from sqlalchemy import Column, MetaData, Table

from cloudphone.core.datamap import PersonalData, declaration


def subject_table(metadata: MetaData) -> Table:
    for table in metadata.sorted_tables:
        for column in table.columns:
            decl = declaration(column.info)
            if decl is not None and decl.subject_key:
                return table
    raise LookupError("no column is declared subject_key=True")


def subject_link(table: Table, metadata: MetaData) -> Column[str] | None:
    """The column holding the subject (account) id of each row of ``table``."""
    subjects = subject_table(metadata)
    if table is subjects:
        (pk,) = table.primary_key.columns
        return pk
    for column in table.columns:
        for fk in column.foreign_keys:
            if fk.column.table is subjects:
                return column
    account_id = table.columns.get("account_id")
    return account_id


def personal_columns(table: Table) -> list[tuple[Column[object], PersonalData]]:
    found = []
    for column in table.columns:
        decl = declaration(column.info)
        if decl is not None:
            found.append((column, decl))
    return found


def personal_tables(metadata: MetaData) -> list[Table]:
    return [t for t in metadata.sorted_tables if personal_columns(t)]


def coverage_gaps(metadata: MetaData) -> list[str]:
    """Personal columns that export and erasure could not reach."""
    return [
        f"{table.name}.{column.name}"
        for table in personal_tables(metadata)
        if subject_link(table, metadata) is None
        for column, _ in personal_columns(table)
    ]
