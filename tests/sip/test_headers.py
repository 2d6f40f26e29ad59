"""The Headers container: lookups by any spelling, list splitting, mutation."""

from __future__ import annotations

import pytest

from cloudphone.sip import Headers, SIPSyntaxError
from cloudphone.sip.headers import Address, Params, Via, split_commas


def test_lookup_by_any_spelling_and_order_kept() -> None:
    h = Headers(
        [("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Call-ID", "x"), ("via", "SIP/2.0/UDP b")]
    )
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get_all("Via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b"]
    assert "i" in h and "call-id" in h and "route" not in h
    assert next(iter(h)) == ("v", "SIP/2.0/UDP a;branch=z9hG4bK1")


def test_set_remove_prepend_pop() -> None:
    h = Headers([("Route", "<sip:a;lr>, <sip:b;lr>"), ("To", "<sip:t@x>"), ("Route", "<sip:c;lr>")])
    assert h.pop_first_value("route") == "<sip:a;lr>"
    assert h.get_all("route") == ["<sip:b;lr>", "<sip:c;lr>"]
    h.prepend("Route", "<sip:z;lr>")
    assert h.get_all("route")[0] == "<sip:z;lr>"
    h.set("route", "<sip:only;lr>")
    assert h.get_all("route") == ["<sip:only;lr>"]
    assert h.remove("route") == 1 and h.get("route") is None
    with pytest.raises(SIPSyntaxError):
        h.add("Bad Name", "x")


def test_non_list_headers_keep_their_commas() -> None:
    h = Headers([("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("Date", "Sat, 13 Nov 2010")])
    assert h.get_all("www-authenticate") == ['Digest realm="a", nonce="b"']
    assert h.get_all("date") == ["Sat, 13 Nov 2010"]


def test_split_commas_rejects_empty_elements_and_open_quotes() -> None:
    with pytest.raises(SIPSyntaxError):
        split_commas("<sip:a>, , <sip:b>")
    with pytest.raises(SIPSyntaxError):
        split_commas('"open, <sip:a>')


def test_params_are_case_insensitive_and_serialise() -> None:
    via = Via.parse("SIP/2.0/UDP h;BRANCH=z9hG4bKa;rport;received=1.2.3.4")
    assert via.branch == "z9hG4bKa" and via.params.get("RPORT") == "" and via.rport is None
    via.params.set("rport", "5060")
    assert via.rport == 5060
    assert str(via) == "SIP/2.0/UDP h;BRANCH=z9hG4bKa;rport=5060;received=1.2.3.4"
    assert Params([("a", None)]) == Params([("A", None)])


def test_lowercase_protocol_name_and_quoted_params() -> None:
    via = Via.parse('sip/2.0/tcp h:5070;branch=z9hG4bKq;x="a;b"')
    assert via.transport == "TCP" and via.port == 5070 and via.branch == "z9hG4bKq"
    assert via.params.get("x") == '"a;b"'


def test_address_forms() -> None:
    a = Address.parse('"A \\"B\\"" <sip:ab@x>;tag=1;expires=5')
    assert a.display_name == 'A "B"' and a.tag == "1" and a.params.get("expires") == "5"
    b = Address.parse("Bob Smith <sip:bob@x>")
    assert b.display_name == "Bob Smith" and b.tag is None
    assert str(b) == "Bob Smith <sip:bob@x>"
    with pytest.raises(SIPSyntaxError):
        Address.parse("<sip:bob@x")
    with pytest.raises(SIPSyntaxError):
        Address.parse('"unterminated <sip:bob@x>')


def test_via_with_ipv6_sent_by_and_received() -> None:
    # RFC 5118 §4.5: an IPv6 received parameter is written without brackets
    via = Via.parse("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=2001:db8::9:255")
    assert via.sent_by == ("[2001:db8::9:1]", 5070)
    assert via.received == "2001:db8::9:255"
