"""The real server process: `make run`'s path on embedded defaults, and TLS (promise P16)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cloudphone.testing.tls import TestCertificates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    environ = {
        **os.environ,
        "CLOUDPHONE_HTTP_PORT": str(port),
        "CLOUDPHONE_DATA_DIR": str(tmp_path / "data"),
        **env,
    }
    environ.pop("CLOUDPHONE_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudphone.cli", "serve", *args],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, port


def _wait(url: str, verify: ssl.SSLContext | bool = True, limit: float = 50.0) -> httpx.Response:
    deadline = time.monotonic() + limit
    while True:
        try:
            return httpx.get(url, verify=verify, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_development_server_on_embedded_defaults_answers_healthz(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    proc, port = _serve(tmp_path, "--development")
    stop.append(proc)
    started = time.monotonic()
    r = _wait(f"http://127.0.0.1:{port}/healthz")
    assert r.json() == {"status": "ok"}
    assert time.monotonic() - started < 50
    assert (tmp_path / "data" / "cloudphone.db").exists()  # SQLite under the data directory
    assert (tmp_path / "data" / "master.key").exists()  # key beside, not inside, the database


@pytest.mark.promise("P16")
def test_tls_interface_serves_https_and_refuses_plain_http(
    tmp_path: Path, stop: list[subprocess.Popen[bytes]]
) -> None:
    certs = TestCertificates(tmp_path)
    proc, port = _serve(
        tmp_path,
        CLOUDPHONE_TLS_CERT_FILE=str(certs.server_cert_file),
        CLOUDPHONE_TLS_KEY_FILE=str(certs.server_key_file),
    )
    stop.append(proc)
    context = ssl.create_default_context(cafile=str(certs.ca_file))
    r = _wait(f"https://127.0.0.1:{port}/healthz", verify=context)
    assert r.status_code == 200
    assert r.http_version in ("HTTP/1.1", "HTTP/2")
    r = httpx.get(f"https://127.0.0.1:{port}/v1/tenants", verify=context)
    assert r.status_code == 401  # over TLS the API is reachable (and wants a credential)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/tenants", timeout=2)
