"""Stream framing over TCP/TLS (RFC 3261 §18.3) and CRLF keep-alives (RFC 5626 §4.4.1)."""

from __future__ import annotations

from cloudphone.sip.framing import (
    BadMessage,
    KeepAlivePing,
    KeepAlivePong,
    MessageReceived,
    StreamBroken,
    StreamFramer,
)

MSG = (
    b"OPTIONS sip:a@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP h.example.com;branch=z9hG4bK1\r\n"
    b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody"
)


def messages(events: list[object]) -> list[bytes]:
    return [e.message.body for e in events if isinstance(e, MessageReceived)]


def test_pipelined_messages_in_one_read() -> None:
    framer = StreamFramer()
    events = framer.feed(MSG + MSG.replace(b"body", b"BODY"))
    assert messages(events) == [b"body", b"BODY"]


def test_message_split_at_every_byte() -> None:
    framer = StreamFramer()
    events: list[object] = []
    for i in range(len(MSG)):
        events += framer.feed(MSG[i : i + 1])
    assert messages(events) == [b"body"]


def test_ping_is_reported_and_pong_after_our_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlivePing()]
    assert framer.feed(b"\r\n") == []  # half a ping: wait
    assert framer.feed(b"\r\n" + MSG)[0] == KeepAlivePing()
    client = StreamFramer()
    assert client.ping() == b"\r\n\r\n"
    assert client.feed(b"\r\n") == [KeepAlivePong()]
    assert client.feed(b"\r\n") == []


def test_missing_content_length_breaks_the_stream() -> None:
    framer = StreamFramer()
    events = framer.feed(MSG.replace(b"Content-Length: 4\r\n", b""))
    assert len(events) == 1 and isinstance(events[0], StreamBroken)
    assert framer.broken
    assert framer.feed(MSG) == []


def test_size_limit_gives_513() -> None:
    framer = StreamFramer(max_message_size=100)
    events = framer.feed(MSG)
    assert isinstance(events[0], StreamBroken) and events[0].error.status_code == 513
    endless = StreamFramer(max_message_size=100)
    events = endless.feed(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 200)
    assert isinstance(events[0], StreamBroken)


def test_malformed_message_with_intact_frame_does_not_break_the_stream() -> None:
    framer = StreamFramer()
    bad = MSG.replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
    events = framer.feed(bad + MSG)
    assert isinstance(events[0], BadMessage) and events[0].error.status_code == 400
    assert messages(events) == [b"body"]


def test_compact_content_length() -> None:
    framer = StreamFramer()
    assert messages(framer.feed(MSG.replace(b"Content-Length:", b"l :"))) == [b"body"]
