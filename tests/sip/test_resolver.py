"""RFC 3263 server location with a fake DNS (dnspython rdata, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from cloudphone.sip import SipURI, parse_uri
from cloudphone.sipnet import Resolver, Target

ZONE = {
    ("example.com", "NAPTR"): [
        '20 10 "s" "SIP+D2U" "" _sip._udp.example.com.',
        '10 10 "s" "SIP+D2T" "" _sip._tcp.example.com.',
        '30 10 "s" "SIPS+D2T" "" _sips._tcp.example.com.',
    ],
    ("_sip._tcp.example.com", "SRV"): ["10 60 5070 b.example.com.", "0 10 5071 a.example.com."],
    ("_sip._udp.example.com", "SRV"): ["0 10 5060 a.example.com."],
    ("_sips._tcp.example.com", "SRV"): ["0 10 5061 a.example.com."],
    ("a.example.com", "A"): ["192.0.2.1"],
    ("b.example.com", "A"): ["192.0.2.2"],
    ("b.example.com", "AAAA"): ["2001:db8::2"],
    ("_sip._udp.srvonly.test", "SRV"): ["0 0 5090 host.srvonly.test."],
    ("host.srvonly.test", "A"): ["192.0.2.9"],
    ("plain.test", "A"): ["192.0.2.7"],
}


async def fake_lookup(name: str, rdtype: str) -> Sequence[Any]:
    return [
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
        for text in ZONE.get((name, rdtype), [])
    ]


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@192.0.2.50", [Target("UDP", "192.0.2.50", 5060)]),
        ("sip:alice@[2001:db8::5]:5080;transport=tcp", [Target("TCP", "2001:db8::5", 5080)]),
        ("sips:alice@192.0.2.50", [Target("TLS", "192.0.2.50", 5061)]),
        ("sip:plain.test:5099", [Target("UDP", "192.0.2.7", 5099, "plain.test")]),
    ],
)
async def test_literals_and_explicit_ports(uri: str, expected: list[Target]) -> None:
    assert await Resolver(fake_lookup).resolve(sip(uri)) == expected


async def test_naptr_order_then_srv_priority() -> None:
    targets = await Resolver(fake_lookup).resolve(sip("sip:example.com"))
    # NAPTR order 10 is TCP: SRV priority 0 (a) before 10 (b, A then AAAA), then UDP, then TLS
    assert targets[:3] == [
        Target("TCP", "192.0.2.1", 5071, "example.com"),
        Target("TCP", "192.0.2.2", 5070, "example.com"),
        Target("TCP", "2001:db8::2", 5070, "example.com"),
    ]
    assert targets[3] == Target("UDP", "192.0.2.1", 5060, "example.com")
    assert targets[4] == Target("TLS", "192.0.2.1", 5061, "example.com")


async def test_sips_uses_only_tls_naptr() -> None:
    targets = await Resolver(fake_lookup).resolve(sip("sips:example.com"))
    assert targets == [Target("TLS", "192.0.2.1", 5061, "example.com")]


async def test_explicit_transport_skips_naptr() -> None:
    targets = await Resolver(fake_lookup).resolve(sip("sip:example.com;transport=udp"))
    assert targets == [Target("UDP", "192.0.2.1", 5060, "example.com")]


async def test_srv_without_naptr_and_plain_a_fallback() -> None:
    resolver = Resolver(fake_lookup)
    assert await resolver.resolve(sip("sip:srvonly.test")) == [
        Target("UDP", "192.0.2.9", 5090, "srvonly.test")
    ]
    assert await resolver.resolve(sip("sip:plain.test")) == [
        Target("UDP", "192.0.2.7", 5060, "plain.test")
    ]
    assert await resolver.resolve(sip("sip:nowhere.test")) == []
