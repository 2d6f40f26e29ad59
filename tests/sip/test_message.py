"""Parsing and serialising messages: RFC 3261 §7, §20, §25 and RFC 4475-style hard cases."""

from __future__ import annotations

import pytest

from cloudphone.sip import (
    Request,
    Response,
    SIPSyntaxError,
    SipURI,
    make_response,
    parse_message,
)

BASE = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    'From: "Alice \\"A\\"" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 5\r\n"
    "\r\n"
    "v=0\r\n"
)


def msg(text: str) -> Request | Response:
    return parse_message(text.encode())


def test_request_fields() -> None:
    m = msg(BASE)
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert isinstance(m.uri, SipURI) and m.uri.user == "bob"
    assert m.via.branch == "z9hG4bK776asdhds"
    assert m.via.sent_by == ("pc33.atlanta.example.com", None)
    assert m.from_.display_name == 'Alice "A"'
    assert m.from_tag == "1928301774"
    assert m.to_tag is None
    assert (m.cseq.seq, m.cseq.method) == (314159, "INVITE")
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.body == b"v=0\r\n"
    assert m.max_forwards == 70


def test_response_fields() -> None:
    text = BASE.replace("INVITE sip:bob@biloxi.example.com SIP/2.0", "SIP/2.0 180 Ringing here")
    m = msg(text)
    assert isinstance(m, Response)
    assert (m.status_code, m.reason) == (180, "Ringing here")


def test_folded_lines_compact_forms_and_whitespace() -> None:
    text = (
        "OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
        "v:  SIP/2.0/TCP  host1.example.com ;  branch = z9hG4bK-1\r\n"
        "Via: SIP/2.0/UDP host2.example.com:5061;branch=z9hG4bK-2,\r\n"
        "  SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bK-3\r\n"
        "t: sip:carol@chicago.example.com\r\n"
        "f : Caller <sip:caller@example.net>;tag=abc\r\n"
        "i: folded-call\r\n"
        " -id@example.net\r\n"
        "CSeq  :\t1\tOPTIONS\r\n"
        "l: 0\r\n"
        "\r\n"
    )
    m = msg(text)
    vias = m.headers.vias()
    assert [v.branch for v in vias] == ["z9hG4bK-1", "z9hG4bK-2", "z9hG4bK-3"]
    assert vias[0].transport == "TCP"
    assert vias[2].host == "[2001:db8::9]" and vias[2].port == 5062
    assert m.call_id == "folded-call -id@example.net"
    assert m.from_tag == "abc"
    assert str(m.to.uri) == "sip:carol@chicago.example.com"
    assert m.cseq.seq == 1


def test_multiple_values_in_one_header_and_one_per_header_are_the_same() -> None:
    one = BASE.replace(
        "Contact: <sip:alice@pc33.atlanta.example.com>", "Route: <sip:a;lr>, <sip:b;lr>"
    )
    two = BASE.replace(
        "Contact: <sip:alice@pc33.atlanta.example.com>", "Route: <sip:a;lr>\r\nRoute: <sip:b;lr>"
    )
    assert msg(one).headers.get_all("route") == msg(two).headers.get_all("route")
    assert msg(one).headers.get_all("route") == ["<sip:a;lr>", "<sip:b;lr>"]


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    text = BASE.replace(
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        'Contact: "Smith, J" <sip:j@a.example;x=1>, <sip:k@b.example>;q=0.5',
    )
    contacts = msg(text).headers.addresses("contact")
    assert [c.display_name for c in contacts] == ["Smith, J", None]
    assert contacts[1].params.get("q") == "0.5"


def test_addr_spec_params_belong_to_the_header() -> None:
    m = msg(
        BASE.replace(
            "To: Bob <sip:bob@biloxi.example.com>", "To: sip:bob@biloxi.example.com;tag=xy"
        )
    )
    assert m.to_tag == "xy"
    assert isinstance(m.to.uri, SipURI) and m.to.uri.params == ()


def test_ipv6_reference_in_request_uri() -> None:
    m = msg(BASE.replace("sip:bob@biloxi.example.com SIP", "sip:[2001:db8::10]:5070 SIP"))
    assert isinstance(m.uri, SipURI)
    assert (m.uri.host, m.uri.port) == ("[2001:db8::10]", 5070)


@pytest.mark.parametrize(
    ("mutation", "status"),
    [
        (("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"), 505),
        (("CSeq: 314159 INVITE", "CSeq: 314159 BYE"), 400),
        (("CSeq: 314159 INVITE", "CSeq: 2147483648 INVITE"), 400),
        (("CSeq: 314159 INVITE", "CSeq: -1 INVITE"), 400),
        (("Max-Forwards: 70", "Max-Forwards: 256"), 400),
        (("Max-Forwards: 70", "Max-Forwards: seventy"), 400),
        (("Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", ""), 400),
        (("Content-Length: 5", "Content-Length: 50"), 400),
        (("Content-Length: 5", "Content-Length: five"), 400),
        (("sip:bob@biloxi.example.com SIP", "<sip:bob@biloxi.example.com> SIP"), 400),
        (("sip:bob@biloxi.example.com SIP", "sip:bob@[::1 SIP"), 400),
        (("sip:bob@biloxi.example.com SIP", "sip:bob@1.2.3.400 SIP"), 400),
        (("Via: SIP/2.0/UDP", "Via: HTTP/1.1/UDP"), 400),
        (("Max-Forwards: 70\r\n", "Max-Forwards 70\r\n"), 400),
        (("\r\n\r\n", "\r\n"), 400),
        (("<sip:alice@pc33.atlanta.example.com>", "<sip:alice@>"), 400),
        (("To: Bob <sip:bob@biloxi.example.com>", "To: Bob <sip:bob@[::1>"), 400),
    ],
)
def test_malformed_messages_are_rejected(mutation: tuple[str, str], status: int) -> None:
    text = BASE.replace(*mutation, 1)
    with pytest.raises(SIPSyntaxError) as info:
        m = msg(text)
        m.validate()
    assert info.value.status_code == status


def test_response_with_unknown_version_is_505() -> None:
    with pytest.raises(SIPSyntaxError) as info:
        msg("SIP/3.0 200 OK\r\n\r\n")
    assert info.value.status_code == 505


def test_content_length_trailing_octets_are_ignored_in_a_datagram() -> None:
    m = msg(BASE + "garbage after the body")
    assert m.body == b"v=0\r\n"


def test_missing_content_length_takes_rest_of_datagram() -> None:
    m = msg(BASE.replace("Content-Length: 5\r\n", "") + "more")
    assert m.body == b"v=0\r\nmore"


def test_leading_crlf_is_ignored() -> None:
    assert msg("\r\n\r\n" + BASE).method == "INVITE"  # type: ignore[union-attr]


def test_serialise_then_parse_gives_an_equivalent_message() -> None:
    m = msg(BASE)
    again = parse_message(bytes(m))
    assert bytes(again) == bytes(m)
    assert list(again.headers) == list(m.headers)
    assert again.body == m.body


def test_serialise_fixes_content_length() -> None:
    m = msg(BASE)
    m.body = b"v=0\r\no=x\r\n"
    assert b"Content-Length: 10\r\n" in bytes(m)
    assert parse_message(bytes(m)).body == b"v=0\r\no=x\r\n"


def test_header_mutation_invalidates_cached_views() -> None:
    m = msg(BASE)
    assert m.via.branch == "z9hG4bK776asdhds"
    m.headers.prepend("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew")
    assert m.via.branch == "z9hG4bKnew"
    assert m.headers.pop_first_value("via") is not None
    assert m.via.branch == "z9hG4bK776asdhds"


def test_make_response_copies_the_right_headers() -> None:
    req = msg(BASE)
    assert isinstance(req, Request)
    resp = make_response(req, 180, to_tag="totag")
    assert resp.reason == "Ringing"
    assert resp.to_tag == "totag"
    assert resp.from_tag == "1928301774"
    assert resp.headers.get("contact") is None
    trying = make_response(req, 100, to_tag="totag")
    assert trying.to_tag is None  # no tag on 100 Trying (§8.2.6.2)


def test_utf8_and_non_ascii_round_trip() -> None:
    text = BASE.replace("Bob <sip", '"Böb 😀" <sip')
    m = msg(text)
    assert m.to.display_name == "Böb 😀"
    assert bytes(m) == text.encode()


def test_expires_is_capped() -> None:
    m = msg(BASE.replace("Max-Forwards: 70", "Max-Forwards: 70\r\nExpires: 4294967296"))
    assert m.headers.delta_seconds("expires") == 2**32 - 1


# In the spirit of RFC 4475 §3.1.1.1 ("wsinv"): folding everywhere, odd case and spacing,
# escaped quotes, compact and long forms mixed, unknown headers with unusual values.
TORTUOUS = (
    "INVITE sip:carol@chair.example.com;unknownparam SIP/2.0\r\n"
    "TO :\r\n sip:carol@chair.example.com ;   tag    = 1918181833n\r\n"
    'from   : "C Rosenberg \\\\\\""       <sip:crosen@example.com>\r\n'
    "  ;\r\n  tag = 98asjd8\r\n"
    "MaX-fOrWaRdS: 0068\r\n"
    "Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
    "Content-Length   : 4\r\n"
    "cseq: 0009\r\n  INVITE\r\n"
    "Via  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n"
    "s :\r\n"
    "NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
    "UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    "Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n"
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n"
    'm:"Quoted string \\"\\"" <sip:crosen@192.168.0.4> ; newparam =\r\n'
    "      newvalue ;\r\n  secondparam ; q = 0.33\r\n"
    "\r\n"
    "v=0\r\n"
)

# In the spirit of RFC 4475 §3.1.1.2 ("intmeth"): every token and URI character class.
UNUSUAL = (
    "!interesting-Method0123456789_*+`.%indeed'~ "
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
    "(doesn't-it)@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP host1.example.com;rport;branch=z9hG4bK-.!%66*_+`'~\r\n"
    'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>\r\n'
    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
    '"\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9"'
    ";tag=_token~1'+`*%!-.\r\n"
    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{\r\n"
    "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~\r\n"
    "Max-Forwards: 255\r\n"
    "extensionHeader-!.%*+_`'~:\xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def test_tortuous_but_valid_invite() -> None:
    m = msg(TORTUOUS)
    assert isinstance(m, Request)
    m.validate()
    assert m.to_tag == "1918181833n"
    assert m.from_tag == "98asjd8"
    assert m.from_.display_name == 'C Rosenberg \\"'
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert m.max_forwards == 68
    vias = m.headers.vias()
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    (contact,) = m.headers.addresses("contact")
    assert contact.params.get("q") == "0.33" and contact.params.get("secondparam") == ""
    assert m.body == b"v=0\r\n"[:4]
    assert parse_message(bytes(m)).headers.get_all("via") == m.headers.get_all("via")


def test_unusual_but_valid_characters() -> None:
    m = parse_message(UNUSUAL.encode("latin-1"))
    assert isinstance(m, Request)
    m.validate()
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m.uri, SipURI)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    again = parse_message(bytes(m))  # equivalent: only "name:value" became "name: value"
    assert list(again.headers) == list(m.headers) and bytes(again) == bytes(m)


def test_transaction_key_reads_everything_matching_needs() -> None:
    key = msg(BASE).transaction_key()
    assert key == (
        "z9hG4bK776asdhds",
        ("pc33.atlanta.example.com", None),
        314159,
        "INVITE",
        "a84b4c76e66710@pc33.atlanta.example.com",
        "1928301774",
        None,
    )
    assert key.branch == "z9hG4bK776asdhds" and key.to_tag is None
