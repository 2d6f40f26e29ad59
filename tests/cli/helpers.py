"""Running the CLI in-process, as the shell would, and reading its JSON output."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from cloudphone.cli.main import app

runner = CliRunner()


def cli_ok(*args: str) -> str:
    """stdout of a command that must succeed."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(*args: str) -> Any:
    """The JSON document a command printed (after any non-JSON lead-in)."""
    out = cli_ok(*args)
    return json.loads(out[min(i for i in (out.find("{"), out.find("[")) if i >= 0) :])
