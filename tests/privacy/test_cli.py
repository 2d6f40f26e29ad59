"""``cloudphone privacy …``: retention dry run, erasure with confirmation, ledger replay after a
restore, requests, holds, policy notices, disclosures — all from the operator's shell."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloudphone.cli.main import app
from tests.cli.helpers import cli_json as _json
from tests.cli.helpers import runner

pytestmark = pytest.mark.usefixtures("cli_env")


def _account(aor: str = "sip:alice@sip.test") -> tuple[str, str]:
    tenant = _json("tenant", "create", "acme", "--domain", "sip.test")
    account = _json("account", "create", "--tenant", tenant["id"], "--aor", aor)
    return tenant["id"], account["id"]


@pytest.mark.promise("P15")
def test_retention_dry_run_and_rules() -> None:
    report = _json("privacy", "retention", "--dry-run")
    assert report["dry_run"] is True and report["rows"] == {}
    rules = _json("privacy", "rules")
    assert rules["audit"] == "at older than 365 days"
    assert rules["account"] == "erased with its subject"


@pytest.mark.promise("P19")
def test_erase_needs_confirmation_and_replay_restores_the_erasure(tmp_path: Path) -> None:
    tenant_id, account_id = _account()
    refused = runner.invoke(app, ["privacy", "erase", "--account", account_id, "--reason", "r"])
    assert refused.exit_code == 1 and "--yes" in refused.output
    db = tmp_path / "data" / "cloudphone.db"
    shutil.copyfile(db, tmp_path / "backup.db")  # the CLI's runs leave the WAL checkpointed
    erased = _json("privacy", "erase", "--account", account_id, "--reason", "ticket 9", "--yes")
    assert "accounts" in erased["tables"]
    assert _json("account", "list", "--tenant", tenant_id) == []
    shutil.copyfile(tmp_path / "backup.db", db)
    assert [a["id"] for a in _json("account", "list", "--tenant", tenant_id)] == [account_id]
    assert _json("privacy", "replay-erasures") == {"erased_again": [account_id]}
    assert _json("account", "list", "--tenant", tenant_id) == []


@pytest.mark.promise("P20")
def test_requests_holds_policy_and_disclosures_from_the_shell() -> None:
    tenant_id, account_id = _account()
    request = _json("privacy", "request", "file", "--account", account_id, "--kind", "rectify")
    assert request["state"] == "unverified"
    _json("privacy", "request", "verify", request["id"])
    done = _json("privacy", "request", "process", request["id"], "--display-name", "Alice L.")
    assert done["state"] == "done"
    assert [r["id"] for r in _json("privacy", "request", "list", "--tenant", tenant_id)] == [
        request["id"]
    ]
    hold = _json("privacy", "hold", "place", "--account", account_id, "--reason", "case 1")
    assert _json("privacy", "hold", "release", hold["id"])["released_at"]
    policy = _json(
        "privacy",
        "policy",
        "create",
        "--tenant",
        tenant_id,
        "--version",
        "v2",
        "--summary",
        "new purpose",
        "--effective",
        "2099-01-01T00:00:00Z",
    )
    assert _json("privacy", "policy", "publish", policy["id"])["in_app"] == 1
    disclosure = _json(
        "privacy",
        "disclosure",
        "record",
        "--tenant",
        tenant_id,
        "--authority",
        "Court",
        "--legal-basis",
        "order 5",
        "--scope",
        "logs",
        "--account",
        account_id,
    )
    assert _json("privacy", "disclosure", "notify", disclosure["id"])["in_app"] == 1
    actions = {e["action"] for e in _json("privacy", "audit", "--tenant", tenant_id)}
    assert {"legal_hold.placed", "disclosure.recorded"} <= actions
