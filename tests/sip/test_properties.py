"""Hypothesis properties of the parser: serialise∘parse is stable, and any mutation of a
valid message either parses or raises SIPSyntaxError — never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudphone.sip import SIPSyntaxError, parse_message
from cloudphone.sip.framing import StreamFramer

SAMPLES = [
    (
        b"INVITE sip:bob@biloxi.example.com;transport=tcp SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
        b"Via: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK-2;received=192.0.2.1\r\n"
        b"Max-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n"
        b'From: "Alice \\"A\\"" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
        b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\nCSeq: 314159 INVITE\r\n"
        b"Contact: <sip:alice@pc33.atlanta.example.com>;expires=60, sip:x@y.example\r\n"
        b"Route: <sip:p1.example;lr>\r\nExpires: 120\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
    ),
    (
        b"SIP/2.0 401 Unauthorized\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa;rport=5062\r\n"
        b"f: <sip:alice@sip.test>;tag=1\r\nt: <sip:alice@sip.test>;tag=2\r\n"
        b"i: c\r\nCSeq: 1 REGISTER\r\n"
        b'WWW-Authenticate: Digest realm="sip.test", nonce="abc", qop="auth"\r\nl: 0\r\n\r\n'
    ),
]

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
user_part = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,", min_size=1, max_size=12
)
header_value = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
    max_size=40,
).map(str.strip)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "MESSAGE"]))
    user = draw(user_part)
    host = draw(st.sampled_from(["example.com", "192.0.2.4", "[2001:db8::1]", "h-1.example"]))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    uri = f"sip:{user}@{host}" + (f":{port}" if port else "")
    branch = draw(token)
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host};branch=z9hG4bK{branch}",
        f"From: <sip:a@{host}>;tag={draw(token)}",
        f'To: "{draw(header_value).replace(chr(92), "").replace(chr(34), "")}" <{uri}>',
        f"Call-ID: {draw(token)}@{host}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}",
    ]
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"X-{draw(token)}: {draw(header_value)}")
    body = draw(st.binary(max_size=30))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@given(messages())
@settings(max_examples=150, deadline=None)
def test_serialise_parse_is_stable(data: bytes) -> None:
    first = parse_message(data)
    first.validate()
    wire = bytes(first)
    second = parse_message(wire)
    assert bytes(second) == wire
    assert second.body == first.body
    assert list(second.headers) == list(first.headers)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.sampled_from(b'\x00\r\n \t:;,"<>@[]=%\\\xff\xc3abc0'))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"\r\n", b" ", b",", b";x", b'"', b"\r\n ", b"\xe2\x82"])
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            end = min(len(data), pos + draw(st.integers(1, 30)))
            data[pos:pos] = data[pos:end]
        if not data:
            data = bytearray(b"x")
    return bytes(data)


@given(mutations())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutations_parse_or_raise_syntax_error(data: bytes) -> None:
    try:
        message = parse_message(data)
        message.transaction_key()  # the hot path, before validate() fills the caches
        message.validate()
        _ = (message.via.branch, message.from_tag, message.to_tag, message.cseq, message.call_id)
        parse_message(bytes(message))
    except SIPSyntaxError as error:
        assert error.status_code in (400, 505)


@given(mutations(), st.integers(1, 50))
@settings(max_examples=150, deadline=None)
def test_framer_never_raises(data: bytes, chunk: int) -> None:
    framer = StreamFramer(max_message_size=4096)
    for i in range(0, len(data), chunk):
        framer.feed(data[i : i + chunk])
