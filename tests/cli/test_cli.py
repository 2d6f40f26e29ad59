"""The command line: administration walkthrough, data map, QR, and one-line errors."""

from __future__ import annotations

import json

import pytest

from cloudphone.cli.main import app
from tests.cli.helpers import cli_json as _json
from tests.cli.helpers import cli_ok as _ok
from tests.cli.helpers import runner
from tests.conftest import TEST_KEYRING

pytestmark = pytest.mark.usefixtures("cli_env")


def test_walkthrough_tenant_account_device_qr() -> None:
    assert "latest schema" in _ok("db", "upgrade")
    tenant = _json("tenant", "create", "acme", "--domain", "sip.test", "--registrar", "127.0.0.1")
    assert isinstance(tenant, dict)
    account = _json("account", "create", "--tenant", tenant["id"], "--aor", "sip:alice@sip.test")
    assert isinstance(account, dict)
    assert account["features"]["incoming_call_mode"] == "push"
    device = _json(
        "device",
        "create",
        "--account",
        account["id"],
        "--platform",
        "ios",
        "--app-id",
        "com.example.phone",
    )
    assert isinstance(device, dict) and device["credential"].startswith("cpd.")
    listed = _json("device", "list", "--account", account["id"])
    assert isinstance(listed, list) and len(listed) == 1
    qr = _ok("provision", "qr", "--account", account["id"])
    assert qr.startswith("cloudphone://provision?server=")
    assert "█" in qr or "▀" in qr  # the drawn QR


def test_config_show_masks_secrets() -> None:
    out = _ok("config", "show")
    shown = json.loads(out)
    assert shown["master_key"] == "**********"
    assert TEST_KEYRING.split(":")[1] not in out


def test_datamap_markdown_and_json() -> None:
    md = _ok("privacy", "datamap")
    assert "| accounts | address_of_record | user.account.username | service |" in md
    entries = json.loads(_ok("privacy", "datamap", "--format", "json"))
    assert {"table": "devices", "column": "call_push_token"}.items() <= entries[-1].items() or any(
        e["table"] == "devices" and e["column"] == "call_push_token" for e in entries
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["account", "create", "--tenant", "nope", "--aor", "sip:a@b.test"], "no such tenant"),
        (["account", "create", "--tenant", "x", "--aor", "not-an-aor"], "address of record"),
        (["privacy", "datamap", "--format", "xml"], "unknown format"),
        (["tenant", "create", "t", "--features", '{"push_instance_lifetime_days": 9}'], "invalid"),
    ],
)
def test_errors_are_one_line_and_non_zero(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cloudphone: error:") and needle in lines[0]


def test_serve_refuses_plain_http_outside_development_mode() -> None:
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "refusing plain HTTP" in result.stderr
