"""Throwaway TLS material and a tiny HTTP/2 server for the local push-service stand-ins.

Everything here listens on 127.0.0.1 only. The certificates are minted per test run (EC P-256,
so generation is fast) and never leave the temporary directory they are written to.

The server is deliberately small: one asyncio protocol driving an ``h2`` state machine, and a
*synchronous* request handler so that benchmarks measure the client, not task scheduling on
the server side.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = "127.0.0.1"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestCertificates:
    """A private CA with one server certificate for 127.0.0.1/localhost.

    ``ca_file`` is what a client configuration points at to trust the local servers.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or Path(tempfile.mkdtemp(prefix="cloudphone-tls-"))
        now = dt.datetime.now(dt.UTC)
        self._not_before = now - dt.timedelta(minutes=5)
        self._not_after = now + dt.timedelta(days=2)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudphone test CA")])
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_cert_file, self.server_key_file = self._issue(
            "localhost", server=True, name="server"
        )

    def _issue(self, common_name: str, *, server: bool, name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                    ]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        cert_file = self.directory / f"{name}.pem"
        key_file = self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o600)
        return cert_file, key_file

    def issue_client_certificate(self, common_name: str) -> tuple[Path, Path]:
        """A client certificate (e.g. an APNs provider certificate) signed by the test CA."""
        safe = "".join(c if c.isalnum() else "_" for c in common_name)
        return self._issue(common_name, server=False, name=f"client-{safe}")

    def server_context(self, *, request_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert_file, self.server_key_file)
        context.set_alpn_protocols(["h2"])
        if request_client_cert:
            context.load_verify_locations(self.ca_file)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only the test CA (for ad-hoc clients in tests)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.set_alpn_protocols(["h2"])
        return context


@dataclass(slots=True)
class H2Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # Subject common name of a verified TLS client certificate, if the client sent one.
    client_cert_cn: str | None = None


@dataclass(slots=True)
class H2Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


Handler = Callable[[H2Request], H2Response]

_SERVER_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    # The handler validates what matters; h2's generic validation only costs time here.
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)


class _H2ServerProtocol(asyncio.Protocol):
    def __init__(self, server: H2TestServer) -> None:
        self._server = server
        self._conn = h2.connection.H2Connection(config=_SERVER_CONFIG)
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, tuple[list[tuple[bytes, bytes]], bytearray]] = {}
        self._client_cn: str | None = None
        self._flush_scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._connections.add(self)
        peer: Any = transport.get_extra_info("peercert")
        if peer:
            for rdn in peer.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        self._client_cn = value
        self._conn.initiate_connection()
        self._conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        answered = 0
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._streams[event.stream_id] = (list(event.headers or ()), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream[1].extend(event.data or b"")
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._answer(event.stream_id)
                answered += 1
                if answered % 16 == 0:
                    self._flush()  # let the client work on early answers of a burst
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id, None)
        self._schedule_flush()

    def _answer(self, stream_id: int) -> None:
        raw_headers, body = self._streams.pop(stream_id)
        if self._server._goaway_before_next:
            # Going away without processing this request: RFC 9113 §6.8 lets the client retry.
            self._server._goaway_before_next = False
            self._conn.close_connection(last_stream_id=max(stream_id - 2, 0))
            self._flush()
            return
        headers = {k.decode().lower(): v.decode() for k, v in raw_headers}
        request = H2Request(
            method=headers.pop(":method", ""),
            path=headers.pop(":path", ""),
            headers=headers,
            body=bytes(body),
            client_cert_cn=self._client_cn,
        )
        try:
            response = self._server.handler(request)
        except Exception:  # a broken handler must show up as a 500, not a hung client
            response = H2Response(500, body=b'{"reason":"InternalServerError"}')
        out = [(b":status", str(response.status).encode())]
        out.extend((k.encode(), v.encode()) for k, v in response.headers)
        if response.body:
            out.append((b"content-length", str(len(response.body)).encode()))
        try:
            self._conn.send_headers(stream_id, out, end_stream=not response.body)
            if response.body:
                self._conn.send_data(stream_id, response.body, end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass

    def _schedule_flush(self) -> None:
        # Coalesce all frames produced in one loop iteration into a single write.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def goaway(self) -> None:
        self._conn.close_connection()
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class H2TestServer:
    """An HTTP/2-over-TLS server on a free 127.0.0.1 port; subclasses implement ``handler``."""

    def __init__(
        self, certificates: TestCertificates | None = None, *, request_client_cert: bool = False
    ) -> None:
        self.certificates = certificates or TestCertificates()
        self._request_client_cert = request_client_cert
        self._server: asyncio.Server | None = None
        self._connections: set[_H2ServerProtocol] = set()
        self._goaway_before_next = False
        self.port = 0

    def handler(self, request: H2Request) -> H2Response:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _H2ServerProtocol(self),
            LOOPBACK,
            0,
            ssl=self.certificates.server_context(request_client_cert=self._request_client_cert),
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.abort()
        await self._server.wait_closed()
        self._server = None

    def send_goaway(self) -> None:
        """Tell every connected client to go away (as APNs does before maintenance)."""
        for connection in list(self._connections):
            connection.goaway()

    def goaway_before_next_request(self) -> None:
        """Answer the next request with GOAWAY naming it unprocessed (as during a restart)."""
        self._goaway_before_next = True

    def drop_connections(self) -> None:
        """Cut every connection without a goodbye (a network failure)."""
        for connection in list(self._connections):
            connection.abort()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
