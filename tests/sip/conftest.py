"""Shared fixtures of the SIP tests: TLS material, a Kamailio per session, SIPp runner."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudphone.sipnet import client_ssl_context
from cloudphone.testing.kamailio import KamailioInstance, run_kamailio
from cloudphone.testing.peers import require_binary
from cloudphone.testing.sipp import Sipp
from cloudphone.testing.tls import TestCertificates

PEERS = Path(__file__).resolve().parents[1] / "peers"


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates(tmp_path_factory.mktemp("sip-tls"))


@pytest.fixture(scope="session")
def server_tls(certificates: TestCertificates) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.server_cert_file, certificates.server_key_file)
    return context


@pytest.fixture(scope="session")
def client_tls(certificates: TestCertificates) -> ssl.SSLContext:
    return client_ssl_context(cafile=str(certificates.ca_file))


@pytest.fixture(scope="session")
def kamailio(
    tmp_path_factory: pytest.TempPathFactory, certificates: TestCertificates
) -> Iterator[KamailioInstance]:
    """A Kamailio registrar/proxy on free UDP/TCP/TLS ports of 127.0.0.1, for the session."""
    binary = require_binary("kamailio")
    with run_kamailio(
        tmp_path_factory.mktemp("kamailio"),
        binary=binary,
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=PEERS / "kamailio" / "dbtext",
        certificate=(certificates.server_cert_file, certificates.server_key_file),
    ) as instance:
        yield instance


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    """SIPp with the project's scenarios; each run works in the test's temp dir."""
    runner = Sipp(require_binary("sipp"), scenarios=PEERS / "sipp", workdir=tmp_path)
    yield runner
    runner.stop_all()


@pytest.fixture(scope="session")
def kamailio_callauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioInstance]:
    """A second Kamailio that also challenges INVITEs of local users with 407 (UDP/TCP only)."""
    binary = require_binary("kamailio")
    with run_kamailio(
        tmp_path_factory.mktemp("kamailio-callauth"),
        binary=binary,
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=PEERS / "kamailio" / "dbtext",
        defines=("WITH_CALLAUTH",),
    ) as instance:
        yield instance
