"""Personal data is declared where it is defined; the data map is generated from the code."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table

from cloudphone.core.datamap import (
    UndeclaredColumn,
    build_datamap,
    not_personal,
    personal,
    undeclared_columns,
)
from cloudphone.schema import metadata


def test_every_column_of_every_table_is_declared() -> None:
    assert undeclared_columns(metadata()) == []


def test_an_undeclared_column_fails_the_data_map() -> None:
    md = MetaData()
    Table(
        "things",
        md,
        Column("id", Integer, primary_key=True, info=not_personal()),
        Column("nickname", String),
    )
    assert undeclared_columns(md) == ["things.nickname"]
    with pytest.raises(UndeclaredColumn, match=r"things\.nickname"):
        build_datamap(md)


def test_datamap_lists_personal_columns_with_category_purpose_retention() -> None:
    entries = {(e.table, e.column): e for e in build_datamap(metadata())}
    aor = entries[("accounts", "address_of_record")]
    assert aor.category == "user.account.username"
    assert aor.purpose == "service" and aor.retention == "account"
    token = entries[("devices", "call_push_token")]
    assert token.purpose == "push"
    assert ("devices", "credential_hash") not in entries  # declared not personal


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError):
        personal("phone", purpose="service", retention="account")
    with pytest.raises(ValueError):
        personal("user.name", purpose="marketing", retention="account")
    with pytest.raises(ValueError):
        personal("user.name", purpose="service", retention="forever")
