"""Digest authentication: RFC 7616 test vectors, RFC 8760 algorithms, stateless nonces."""

from __future__ import annotations

import pytest

from cloudphone.sip import Request, Response
from cloudphone.sip.digest import (
    AuthOutcome,
    Credentials,
    DigestClient,
    DigestServer,
    digest_response,
    parse_challenge,
)

KEY = b"0123456789abcdef0123456789abcdef"

RFC7616 = dict(
    username="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    method="GET",
    uri="/dir/index.html",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    qop="auth",
    nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
)


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    assert digest_response(algorithm=algorithm, **RFC7616) == expected


def test_rfc2617_without_qop() -> None:
    # RFC 2617 §3.5 example, recomputed without qop (the legacy form SIP UAs still use)
    r = digest_response(
        algorithm="MD5",
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )
    assert r == "670fd8c2df070c60b045671b8b24ff02"


def register() -> Request:
    return Request(
        "REGISTER",
        "sip:sip.test",
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa"),
            ("From", "<sip:alice@sip.test>;tag=1"),
            ("To", "<sip:alice@sip.test>"),
            ("Call-ID", "c"),
            ("CSeq", "1 REGISTER"),
        ],
    )


def challenge_response(server: DigestServer, now: float, stale: bool = False) -> Response:
    return Response(401, "Unauthorized", server.challenge_headers(now, stale=stale))


PASSWORDS = {"alice": "alice-secret"}


@pytest.mark.parametrize("algorithms", [("SHA-512-256",), ("SHA-256", "MD5"), ("MD5",)])
def test_client_and_server_agree(algorithms: tuple[str, ...]) -> None:
    server = DigestServer("sip.test", KEY, algorithms=algorithms)
    client = DigestClient(Credentials("alice", "alice-secret"), cnonce=lambda: "cn")
    req = register()
    assert server.verify(req, 100.0, PASSWORDS.get).outcome is AuthOutcome.MISSING
    assert client.authorize(req, challenge_response(server, 100.0))
    header = req.headers.get("authorization") or ""
    assert f"algorithm={algorithms[0]}" in header and "nc=00000001" in header
    result = server.verify(req, 101.0, PASSWORDS.get)
    assert result.ok and result.username == "alice"


def test_wrong_password_fails_and_client_does_not_loop() -> None:
    server = DigestServer("sip.test", KEY)
    client = DigestClient(Credentials("alice", "wrong"))
    req = register()
    challenge = challenge_response(server, 0.0)
    assert client.authorize(req, challenge)
    assert server.verify(req, 1.0, PASSWORDS.get).outcome is AuthOutcome.FAILED
    assert not client.authorize(req, challenge)  # same nonce rejected twice: give up


def test_expired_nonce_is_stale_and_client_retries() -> None:
    server = DigestServer("sip.test", KEY, nonce_ttl=30)
    client = DigestClient(Credentials("alice", "alice-secret"))
    req = register()
    assert client.authorize(req, challenge_response(server, 0.0))
    assert server.verify(req, 31.0, PASSWORDS.get).outcome is AuthOutcome.STALE
    stale = challenge_response(server, 31.0, stale=True)
    assert parse_challenge(stale.headers.get("www-authenticate") or "").stale  # type: ignore[union-attr]
    assert client.authorize(req, stale)
    assert server.verify(req, 32.0, PASSWORDS.get).ok


def test_forged_nonce_and_other_realm_key_fail() -> None:
    other = DigestServer("sip.test", b"another key of 32 bytes.........")
    server = DigestServer("sip.test", KEY)
    client = DigestClient(Credentials("alice", "alice-secret"))
    req = register()
    client.authorize(req, challenge_response(other, 0.0))
    assert server.verify(req, 1.0, PASSWORDS.get).outcome is AuthOutcome.FAILED


def test_uri_mismatch_fails_unless_disabled() -> None:
    server = DigestServer("sip.test", KEY)
    client = DigestClient(Credentials("alice", "alice-secret"))
    req = register()
    client.authorize(req, challenge_response(server, 0.0))
    req.uri = Request("REGISTER", "sip:elsewhere.test").uri
    assert server.verify(req, 1.0, PASSWORDS.get).outcome is AuthOutcome.FAILED
    lenient = DigestServer("sip.test", KEY, check_uri=False)
    assert lenient.verify(req, 1.0, PASSWORDS.get).ok


def test_realm_choice_and_proxy_challenge() -> None:
    client = DigestClient(
        [Credentials("a", "pa", realm="one.test"), Credentials("b", "pb", realm="two.test")]
    )
    req = register()
    proxy = DigestServer("two.test", KEY, proxy=True)
    resp = Response(407, "Proxy Authentication Required", proxy.challenge_headers(0.0))
    assert client.authorize(req, resp)
    assert req.headers.get("authorization") is None
    assert 'username="b"' in (req.headers.get("proxy-authorization") or "")
    assert proxy.verify(req, 0.5, {"b": "pb"}.get).ok


def test_no_credentials_for_realm() -> None:
    client = DigestClient(Credentials("a", "pa", realm="one.test"))
    server = DigestServer("two.test", KEY)
    assert not client.authorize(register(), challenge_response(server, 0.0))


def test_nonce_count_increments_per_nonce() -> None:
    server = DigestServer("sip.test", KEY)
    client = DigestClient(Credentials("alice", "alice-secret"))
    challenge = Response(401, "", server.challenge_headers(0.0, stale=True))
    first, second = register(), register()
    client.authorize(first, challenge)
    client.authorize(second, challenge)
    assert "nc=00000002" in (second.headers.get("authorization") or "")
