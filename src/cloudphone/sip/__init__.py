"""cloudphone's SIP core: a pure, sans-IO RFC 3261 stack.

Bytes in, events out; no sockets, no asyncio, no clock reads (time is passed in). The asyncio
adapter lives in :mod:`cloudphone.sipnet`.

Modules: ``message`` (parse_message, Request, Response, Headers, make_response), ``uri``
(SipURI, parse_uri, §19.1.4 comparison), ``headers`` (Via, Address, CSeq, Params),
``framing`` (StreamFramer for TCP/TLS), ``transaction`` (TransactionLayer and the four §17
state machines), ``digest`` (DigestClient, DigestServer), ``registration``
(RegistrationClient), ``proxy`` (§16 building blocks), ``dialog`` (Dialog: ACK for 2xx, BYE).
"""

from cloudphone.sip.errors import LocalProtocolError, MessageTooLarge, SIPError, SIPSyntaxError
from cloudphone.sip.headers import Address, CSeq, Params, Via
from cloudphone.sip.message import (
    Headers,
    Message,
    Request,
    Response,
    TransactionKey,
    make_response,
    parse_message,
)
from cloudphone.sip.uri import URI, AbsoluteURI, SipURI, parse_uri

__all__ = [
    "URI",
    "AbsoluteURI",
    "Address",
    "CSeq",
    "Headers",
    "LocalProtocolError",
    "Message",
    "MessageTooLarge",
    "Params",
    "Request",
    "Response",
    "SIPError",
    "SIPSyntaxError",
    "SipURI",
    "TransactionKey",
    "Via",
    "make_response",
    "parse_message",
    "parse_uri",
]
