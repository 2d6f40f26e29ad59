"""Framing SIP over a byte stream (TCP, TLS): RFC 3261 §18.3 and RFC 5626 §4.4.1 keep-alives.

On a stream, Content-Length is mandatory and is the only way to find where a message ends.
A double CRLF between messages is a keep-alive ping, answered by a single CRLF (the pong).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cloudphone.sip.errors import MessageTooLarge, SIPSyntaxError
from cloudphone.sip.message import Request, Response, parse_message

__all__ = [
    "PING",
    "PONG",
    "BadMessage",
    "FrameEvent",
    "KeepAlivePing",
    "KeepAlivePong",
    "MessageReceived",
    "StreamBroken",
    "StreamFramer",
]

PING = b"\r\n\r\n"  # RFC 5626 §4.4.1
PONG = b"\r\n"

_CONTENT_LENGTH_RE = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Request | Response


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message whose frame was intact but whose content is malformed; the stream goes on."""

    error: SIPSyntaxError
    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """The peer sent a CRLFCRLF ping: answer with :data:`PONG`."""


@dataclass(frozen=True, slots=True)
class KeepAlivePong:
    """The peer answered our ping."""


@dataclass(frozen=True, slots=True)
class StreamBroken:
    """Framing is lost (no Content-Length, message too large): close the connection."""

    error: SIPSyntaxError


FrameEvent = MessageReceived | BadMessage | KeepAlivePing | KeepAlivePong | StreamBroken


class StreamFramer:
    """Bytes of one connection in, events out. Feed whatever ``recv`` returned."""

    def __init__(self, max_message_size: int = 65535) -> None:
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._awaiting_pong = False
        self._broken = False
        self._search_from = 0

    def ping(self) -> bytes:
        """Bytes of a keep-alive ping to write; the next lone CRLF is reported as a pong."""
        self._awaiting_pong = True
        return PING

    @property
    def broken(self) -> bool:
        return self._broken

    def feed(self, data: bytes) -> list[FrameEvent]:
        if self._broken:
            return []
        self._buffer += data
        events: list[FrameEvent] = []
        while self._buffer:
            event = self._next_event()
            if event is None:
                break
            events.append(event)
            if isinstance(event, StreamBroken):
                self._broken = True
                self._buffer.clear()
                break
        return events

    def _next_event(self) -> FrameEvent | None:
        buf = self._buffer
        if buf[:2] == b"\r\n":
            if self._awaiting_pong and buf[2:4] != b"\r\n":
                # a lone CRLF answering our ping, unless it is the start of a peer's ping
                if len(buf) >= 4 or len(buf) == 2:
                    del buf[:2]
                    self._awaiting_pong = False
                    return KeepAlivePong()
            if len(buf) < 4:
                return None
            if buf[2:4] == b"\r\n":
                del buf[:4]
                return KeepAlivePing()
            # a stray CRLF before a start line is ignored (§7.5)
            del buf[:2]
            return self._next_event()
        end = buf.find(b"\r\n\r\n", self._search_from)
        if end < 0:
            if len(buf) > self.max_message_size:
                return StreamBroken(MessageTooLarge("header section exceeds the size limit"))
            self._search_from = max(0, len(buf) - 3)
            return None
        self._search_from = 0
        head = bytes(buf[:end])
        match = _CONTENT_LENGTH_RE.search(head)
        if match is None:
            return StreamBroken(SIPSyntaxError("Content-Length is required on streams"))  # §18.3
        total = end + 4 + int(match.group(1))
        if total > self.max_message_size:
            return StreamBroken(MessageTooLarge(f"message of {total} octets exceeds the limit"))
        if len(buf) < total:
            self._search_from = end  # header end is known; wait for the body
            return None
        data = bytes(buf[:total])
        del buf[:total]
        try:
            return MessageReceived(parse_message(data))
        except SIPSyntaxError as error:
            return BadMessage(error, data)
