"""Proxy building blocks (RFC 3261 §16)."""

from __future__ import annotations

from cloudphone.sip import Request, SipURI, make_response, parse_message, parse_uri
from cloudphone.sip.proxy import (
    cancel_matches,
    check_max_forwards,
    detect_loop,
    forward_copy,
    loop_branch,
    next_hop,
    pop_via,
    preprocess_route,
    push_via,
    record_route,
)

ME = parse_uri("sip:proxy.example.com:5060")


def is_me(uri: object) -> bool:
    return isinstance(uri, SipURI) and (uri.host, uri.port) == ("proxy.example.com", 5060)


def invite(extra: str = "", max_forwards: int = 70, uri: str = "sip:bob@b.example") -> Request:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP a.example:5060;branch=z9hG4bKuac\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        "From: <sip:alice@a.example>;tag=ft\r\nTo: <sip:bob@b.example>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def test_max_forwards_zero_gives_483_and_copy_decrements() -> None:
    resp = check_max_forwards(invite(max_forwards=0))
    assert resp is not None and resp.status_code == 483
    assert check_max_forwards(invite(max_forwards=1)) is None
    out = forward_copy(invite(max_forwards=5), parse_uri("sip:bob@192.0.2.4"))
    assert out.max_forwards == 4 and str(out.uri) == "sip:bob@192.0.2.4"


def test_record_route_is_loose_and_on_top() -> None:
    req = invite("Record-Route: <sip:other.example;lr>\r\n")
    assert isinstance(ME, SipURI)
    record_route(req, ME)
    assert req.headers.get_all("record-route") == [
        "<sip:proxy.example.com:5060;lr>",
        "<sip:other.example;lr>",
    ]


def test_loose_routing_pops_our_route_and_targets_the_next() -> None:
    req = invite("Route: <sip:proxy.example.com:5060;lr>, <sip:next.example;lr>\r\n")
    preprocess_route(req, is_me)
    assert req.headers.get_all("route") == ["<sip:next.example;lr>"]
    assert str(next_hop(req)) == "sip:next.example;lr"
    assert str(req.uri) == "sip:bob@b.example"  # loose routing keeps the Request-URI


def test_strict_router_rewrite_is_undone() -> None:
    # a strict router put our URI in the Request-URI and the real target last (§16.4)
    req = invite(
        "Route: <sip:x.example;lr>, <sip:bob@b.example>\r\n", uri="sip:proxy.example.com:5060"
    )
    preprocess_route(req, is_me)
    assert str(req.uri) == "sip:bob@b.example"
    assert req.headers.get_all("route") == ["<sip:x.example;lr>"]


def test_next_hop_to_a_strict_router() -> None:
    req = invite("Route: <sip:strict.example>\r\n")
    assert str(next_hop(req)) == "sip:strict.example"
    assert str(req.uri) == "sip:strict.example"
    assert req.headers.get_all("route") == ["<sip:bob@b.example>"]


def test_via_push_and_pop() -> None:
    req = invite()
    push_via(req, "udp", "proxy.example.com", 5060, "z9hG4bKp1")
    assert req.via.branch == "z9hG4bKp1" and req.via.transport == "UDP"
    resp = make_response(req, 200, to_tag="t")
    below = pop_via(resp)
    assert below is not None and below.branch == "z9hG4bKuac"
    assert pop_via(resp) is None  # the last Via: the response was ours


def test_loop_is_detected_but_a_spiral_is_not() -> None:
    first = invite()
    branch = loop_branch(first, "salt")
    push_via(first, "UDP", "proxy.example.com", 5060, branch)
    # the same request comes back to us unchanged (through another hop)
    looped = forward_copy(first)
    push_via(looped, "UDP", "other.example", 5060, "z9hG4bKother")
    assert detect_loop(looped, ("proxy.example.com", 5060), "salt")
    # a spiral: the Request-URI changed (e.g. retargeted), so the hash differs
    spiral = forward_copy(first, parse_uri("sip:bob@elsewhere.example"))
    push_via(spiral, "UDP", "other.example", 5060, "z9hG4bKother")
    assert not detect_loop(spiral, ("proxy.example.com", 5060), "salt")
    assert not detect_loop(invite(), ("proxy.example.com", 5060), "salt")


def test_cancel_matching() -> None:
    inv = invite()
    cancel = invite()
    cancel.method = "CANCEL"
    assert cancel_matches(cancel, inv)
    other = invite()
    other.headers.set("Via", "SIP/2.0/UDP a.example:5060;branch=z9hG4bKelse")
    assert not cancel_matches(other, inv)
