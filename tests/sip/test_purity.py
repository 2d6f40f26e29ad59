"""The SIP core is sans-IO: importing it pulls in no asyncio, sockets, database or web code."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("asyncio", "socket", "ssl", "sqlalchemy", "fastapi", "starlette", "cloudphone.sipnet")


def test_core_imports_no_io() -> None:
    code = (
        "import sys, importlib, pkgutil, cloudphone.sip as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module(f'cloudphone.sip.{m.name}')\n"
        f"print(','.join(n for n in {FORBIDDEN!r} if n in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"cloudphone.sip imported: {result.stdout.strip()}"
