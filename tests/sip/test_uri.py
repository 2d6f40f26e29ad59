"""SIP URI grammar (§19.1, §25.1), IPv6 references (RFC 5118) and comparison (§19.1.4)."""

from __future__ import annotations

import pytest

from cloudphone.sip import AbsoluteURI, SIPSyntaxError, SipURI, parse_uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


def test_components() -> None:
    u = sip("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=hi&priority=urgent")
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    assert u.param("transport") == "tcp" and u.transport == "tcp"
    assert u.param("lr") == "" and u.is_loose_router
    assert u.headers == (("subject", "hi"), ("priority", "urgent"))
    assert (
        str(u) == "sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=hi&priority=urgent"
    )


def test_telephone_subscriber_user_with_semicolons() -> None:
    u = sip("sip:+1-212-555-1212;isub=1234@gateway.example.com;user=phone")
    assert u.user == "+1-212-555-1212;isub=1234"
    assert u.param("user") == "phone"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
        ("sip:[2001:db8::10]:5060", "sip:[2001:0db8:0000::0010]:5060"),
    ],
)
def test_equivalent_uris(a: str, b: str) -> None:
    assert parse_uri(a) == parse_uri(b)
    assert hash(parse_uri(a)) == hash(parse_uri(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;user=phone"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;maddr=192.0.2.1"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
    ],
)
def test_non_equivalent_uris(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@host:99999",
        "sip:user@[2001:db8::1",
        "sip:user@[2001:db8:::::1]",
        "sip:us er@host",
        "sip:user@host;par am=1",
        "sip:user@host?novalue",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SIPSyntaxError):
        parse_uri(text)


def test_other_schemes_are_absolute_uris() -> None:
    u = parse_uri("tel:+358-555-1234567;postd=pp22")
    assert isinstance(u, AbsoluteURI) and u.scheme == "tel"
    assert str(u) == "tel:+358-555-1234567;postd=pp22"


def test_with_params_and_without_params() -> None:
    u = sip("sip:proxy.example.com;transport=udp")
    assert str(u.with_params(lr=None)) == "sip:proxy.example.com;transport=udp;lr"
    assert str(u.without_params("transport")) == "sip:proxy.example.com"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:user@[2001:db8::10]", "[2001:db8::10]", None),
        ("sip:user@[2001:db8::10]:5070", "[2001:db8::10]", 5070),
        ("sip:user@[2001:db8::10:5070]", "[2001:db8::10:5070]", None),  # a port inside is address
        ("sip:user@[::ffff:192.0.2.128]", "[::ffff:192.0.2.128]", None),  # RFC 5118 §4.3
    ],
)
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    u = sip(text)
    assert (u.host, u.port) == (host, port)


def test_ipv6_comparison_uses_the_address_not_the_spelling() -> None:
    # RFC 5118 §4.4: a zero-compressed and a full form name the same host
    assert parse_uri("sip:[2001:db8:0:0:0:0:0:28]") == parse_uri("sip:[2001:db8::28]")
    assert parse_uri("sip:[2001:db8::28]") != parse_uri("sip:[2001:db8::29]")


def test_ipv6_without_brackets_is_not_a_host() -> None:
    with pytest.raises(SIPSyntaxError):
        parse_uri("sip:user@2001:db8::10")
