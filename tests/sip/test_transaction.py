"""Transactions (RFC 3261 §17, RFC 6026) driven by a fake clock: every timer A–M."""

from __future__ import annotations

import itertools

import pytest

from cloudphone.sip import Request, Response, make_response, parse_message
from cloudphone.sip.errors import LocalProtocolError
from cloudphone.sip.transaction import (
    Deliver,
    State,
    Terminated,
    Timeout,
    TransactionLayer,
    Transmit,
    TransportError,
    server_key,
)

T1, T2, T4 = 0.5, 4.0, 5.0


def request(method: str, branch: str = "z9hG4bKabc", to_tag: str | None = None) -> Request:
    to = "<sip:bob@b.example>" + (f";tag={to_tag}" if to_tag else "")
    return Request(
        method,
        "sip:bob@b.example",
        [
            ("Via", f"SIP/2.0/UDP a.example:5060;branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@a.example>;tag=ft"),
            ("To", to),
            ("Call-ID", "call-1"),
            ("CSeq", f"1 {method}"),
        ],
    )


def wire(message: Request | Response) -> Request | Response:
    """Round-trip through bytes, as a message from the network would arrive."""
    return parse_message(bytes(message))


def transmits(actions: list[object]) -> list[Request | Response]:
    return [a.message for a in actions if isinstance(a, Transmit)]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Advance the fake clock deadline by deadline; return (time, action) pairs."""
    out: list[tuple[float, object]] = []
    while (at := layer.next_deadline) is not None and at <= end:
        out += [(at, action) for _, action in layer.on_timer(at)]
    return out


def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    tx, actions = layer.start_client(request("INVITE"), 0.0, reliable=False)
    assert len(transmits(actions)) == 1 and tx.state is State.CALLING
    events = run_until(layer, 100.0)
    sent_at = [t for t, a in events if isinstance(a, Transmit)]
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # A: T1, 2T1, 4T1 ... (§17.1.1.2)
    assert (32.0, Timeout("B")) in events and (32.0, Terminated()) in events
    assert len(layer) == 0


def test_invite_client_over_tcp_never_retransmits() -> None:
    layer = TransactionLayer()
    layer.start_client(request("INVITE"), 0.0, reliable=True)
    events = run_until(layer, 100.0)
    assert [a for _, a in events] == [Timeout("B"), Terminated()]


def test_invite_client_non_2xx_sends_ack_and_waits_timer_d() -> None:
    layer = TransactionLayer()
    req = request("INVITE")
    tx, _ = layer.start_client(req, 0.0, reliable=False)
    layer.receive_response(wire(make_response(req, 180, to_tag="tt")), 0.1)  # type: ignore[arg-type]
    assert tx.state is State.PROCEEDING
    busy = wire(make_response(req, 486, to_tag="tt"))
    _, actions = layer.receive_response(busy, 0.2)  # type: ignore[arg-type]
    (ack,) = transmits(actions)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.via.branch == req.via.branch and ack.to_tag == "tt"  # §17.1.1.3
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert Deliver(busy) in actions
    _, again = layer.receive_response(busy, 1.0)  # type: ignore[arg-type]
    assert transmits(again) == [ack] and not any(isinstance(a, Deliver) for a in again)
    events = run_until(layer, 100.0)
    assert events == [(0.2 + 32.0, Terminated())]  # Timer D


def test_invite_client_2xx_accepted_then_timer_m() -> None:
    layer = TransactionLayer()
    req = request("INVITE")
    tx, _ = layer.start_client(req, 0.0, reliable=False)
    ok = wire(make_response(req, 200, to_tag="tt"))
    _, actions = layer.receive_response(ok, 0.3)  # type: ignore[arg-type]
    assert actions == [Deliver(ok)] and tx.state is State.ACCEPTED
    _, again = layer.receive_response(ok, 1.0)  # type: ignore[arg-type]
    assert again == [Deliver(ok)]  # 2xx retransmissions go to the TU (RFC 6026)
    assert run_until(layer, 100.0) == [(0.3 + 64 * T1, Terminated())]


def test_non_invite_client_timer_e_caps_at_t2_then_f() -> None:
    layer = TransactionLayer()
    layer.start_client(request("REGISTER"), 0.0, reliable=False)
    events = run_until(layer, 100.0)
    sent = [t for t, a in events if isinstance(a, Transmit)]
    assert sent[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, 4 ... (§17.1.2.2)
    assert all(b - a == T2 for a, b in itertools.pairwise(sent[3:]))
    assert (32.0, Timeout("F")) in events


def test_non_invite_client_proceeding_retransmits_every_t2_and_timer_k() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    tx, _ = layer.start_client(req, 0.0, reliable=False)
    layer.receive_response(wire(make_response(req, 100)), 0.1)  # type: ignore[arg-type]
    assert tx.state is State.PROCEEDING
    events = run_until(layer, 4.0)
    assert [t for t, a in events if isinstance(a, Transmit)] == [0.5]
    events = run_until(layer, 9.0)
    assert [t for t, a in events if isinstance(a, Transmit)] == [4.5, 8.5]
    ok = wire(make_response(req, 200))
    _, actions = layer.receive_response(ok, 9.0)  # type: ignore[arg-type]
    assert actions == [Deliver(ok)] and tx.state is State.COMPLETED
    assert layer.receive_response(ok, 9.1)[1] == []  # absorbed
    assert run_until(layer, 100.0) == [(9.0 + T4, Terminated())]  # Timer K


def test_non_invite_client_timer_k_is_zero_on_tcp() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.start_client(req, 0.0, reliable=True)
    layer.receive_response(wire(make_response(req, 200)), 1.0)  # type: ignore[arg-type]
    assert run_until(layer, 100.0) == [(1.0, Terminated())]


def test_invite_server_sends_trying_absorbs_and_timer_g_h() -> None:
    layer = TransactionLayer()
    req = wire(request("INVITE"))
    tx, actions = layer.receive_request(req, 0.0, reliable=False)  # type: ignore[arg-type]
    assert tx is not None
    (trying,) = transmits(actions)
    assert isinstance(trying, Response) and trying.status_code == 100
    assert Deliver(req) in actions
    _, retrans = layer.receive_request(req, 0.2, reliable=False)  # type: ignore[arg-type]
    assert transmits(retrans) == [trying]
    busy = make_response(req, 486, to_tag="st")  # type: ignore[arg-type]
    layer.send_response(tx, busy, 1.0)
    events = run_until(layer, 100.0)
    sent = [t for t, a in events if isinstance(a, Transmit)]
    assert sent == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]  # G capped at T2
    assert (33.0, Timeout("H")) in events  # H = 64*T1 (§17.2.1)


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    req = wire(request("INVITE"))
    tx, _ = layer.receive_request(req, 0.0, reliable=False)  # type: ignore[arg-type]
    assert tx is not None
    layer.send_response(tx, make_response(req, 404, to_tag="st"), 0.0)  # type: ignore[arg-type]
    ack = request("ACK", to_tag="st")
    ack.headers.set("CSeq", "1 ACK")
    matched, actions = layer.receive_request(wire(ack), 0.3, reliable=False)  # type: ignore[arg-type]
    assert matched is tx and actions == [] and tx.state is State.CONFIRMED
    assert run_until(layer, 100.0) == [(0.3 + T4, Terminated())]


def test_invite_server_2xx_retransmitted_until_ack_then_timer_l() -> None:
    layer = TransactionLayer()
    req = wire(request("INVITE"))
    tx, _ = layer.receive_request(req, 0.0, reliable=False)  # type: ignore[arg-type]
    assert tx is not None
    layer.send_response(tx, make_response(req, 200, to_tag="st"), 0.0)  # type: ignore[arg-type]
    early = run_until(layer, 1.6)
    assert [t for t, a in early if isinstance(a, Transmit)] == [0.5, 1.5]
    ack = wire(request("ACK", branch="z9hG4bKother", to_tag="st"))
    assert layer.receive_request(ack, 1.6, reliable=False) == (None, [])  # 2xx ACK: no tx
    assert layer.accepted_invite_for_ack(ack) is tx  # type: ignore[arg-type]
    tx.ack_received(1.6)  # type: ignore[union-attr]
    assert run_until(layer, 100.0) == [(64 * T1, Terminated())]
    assert layer.accepted_invite_for_ack(ack) is None  # forgotten with its transaction
    assert len(layer) == 0


def test_non_invite_server_timer_j_and_retransmitted_response() -> None:
    layer = TransactionLayer()
    req = wire(request("OPTIONS"))
    tx, actions = layer.receive_request(req, 0.0, reliable=False)  # type: ignore[arg-type]
    assert actions == [Deliver(req)] and tx is not None
    assert layer.receive_request(req, 0.1, reliable=False)[1] == []  # Trying: absorbed
    ok = make_response(req, 200, to_tag="x")  # type: ignore[arg-type]
    layer.send_response(tx, ok, 1.0)
    assert layer.receive_request(req, 2.0, reliable=False)[1] == [Transmit(ok)]
    with pytest.raises(LocalProtocolError):
        layer.send_response(tx, ok, 2.0)
    assert run_until(layer, 100.0) == [(1.0 + 64 * T1, Terminated())]


def test_timer_j_is_zero_on_tcp() -> None:
    layer = TransactionLayer()
    req = wire(request("OPTIONS"))
    tx, _ = layer.receive_request(req, 0.0, reliable=True)  # type: ignore[arg-type]
    assert tx is not None
    layer.send_response(tx, make_response(req, 200), 1.0)  # type: ignore[arg-type]
    assert run_until(layer, 100.0) == [(1.0, Terminated())]


def test_cancel_matches_its_invite_but_is_its_own_transaction() -> None:
    layer = TransactionLayer()
    invite = wire(request("INVITE"))
    tx, _ = layer.receive_request(invite, 0.0, reliable=False)  # type: ignore[arg-type]
    cancel = request("CANCEL")
    cancel_tx, actions = layer.receive_request(wire(cancel), 0.5, reliable=False)  # type: ignore[arg-type]
    assert cancel_tx is not tx and Deliver(cancel_tx.request) in actions  # type: ignore[union-attr]
    assert layer.find_invite_for_cancel(cancel) is tx


def test_rfc2543_fallback_matching() -> None:
    layer = TransactionLayer()
    old = request("INVITE", branch="1")
    tx, _ = layer.receive_request(wire(old), 0.0, reliable=False)  # type: ignore[arg-type]
    assert server_key(old)[0] == "2543"
    assert layer.receive_request(wire(old), 0.1, reliable=False)[0] is tx  # type: ignore[arg-type]
    layer.send_response(tx, make_response(old, 486, to_tag="st"), 0.2)  # type: ignore[arg-type]
    ack = request("ACK", branch="1", to_tag="st")
    ack.headers.set("CSeq", "1 ACK")
    assert layer.match_server(ack) is tx
    wrong = request("ACK", branch="1", to_tag="other")
    wrong.headers.set("CSeq", "1 ACK")
    assert layer.match_server(wrong) is None


def test_transport_error_terminates() -> None:
    layer = TransactionLayer()
    tx, _ = layer.start_client(request("OPTIONS"), 0.0, reliable=True)
    assert layer.transport_error(tx) == [TransportError(), Terminated()]
    assert len(layer) == 0 and layer.next_deadline is None


def test_response_for_unknown_transaction_is_stray() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    assert layer.receive_response(wire(make_response(req, 200)), 0.0) == (None, [])  # type: ignore[arg-type]


def test_transition_tables_reject_a_move_the_rfc_does_not_have() -> None:
    layer = TransactionLayer()
    tx, _ = layer.start_client(request("OPTIONS"), 0.0, reliable=False)
    with pytest.raises(LocalProtocolError):
        tx._enter(State.CONFIRMED)  # only INVITE server transactions are ever Confirmed
    assert tx.state is State.TRYING
