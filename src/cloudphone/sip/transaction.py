"""SIP transactions (RFC 3261 §17, with the Accepted state of RFC 6026) as pure state machines.

A transaction takes messages and the current time, and returns actions: transmit a message,
deliver one to the transaction user (TU), report a timeout, or say it has terminated.
``next_deadline`` tells the caller when to call ``on_timer(now)`` again. Retransmission timers
(A, E, G) run only over unreliable transports (§17.1.1.2); on reliable ones the wait timers
(D, I, J, K) are zero.

Timer values (§17.1.1.1, Table 4)::

    A  INVITE request retransmit       T1, doubling               (UDP only)
    B  INVITE transaction timeout      64*T1
    D  wait for response retransmits  32 s UDP, 0 reliable
    E  non-INVITE request retransmit   T1, doubling up to T2      (UDP only)
    F  non-INVITE transaction timeout  64*T1
    G  INVITE final-response retransmit T1, doubling up to T2     (UDP only)
    H  wait for ACK                    64*T1
    I  wait for ACK retransmits        T4 UDP, 0 reliable
    J  wait for request retransmits    64*T1 UDP, 0 reliable
    K  wait for response retransmits   T4 UDP, 0 reliable
    L  (RFC 6026) accepted INVITE server: absorb retransmits 64*T1
    M  (RFC 6026) accepted INVITE client: absorb 2xx retransmits 64*T1
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from cloudphone.sip.errors import LocalProtocolError
from cloudphone.sip.headers import BRANCH_MAGIC
from cloudphone.sip.message import Request, Response, make_response

__all__ = [
    "Action",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "Deliver",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "State",
    "Terminated",
    "Timeout",
    "Timers",
    "Transaction",
    "TransactionLayer",
    "Transmit",
    "TransportError",
    "build_ack",
    "client_key",
    "server_key",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit interval), T4 (max network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"  # RFC 6026
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send this message to the transaction's peer."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class Deliver:
    """Pass this message up to the transaction user."""

    message: Request | Response


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timer B, F or H fired: for a client this is a 408 (§8.1.3.1)."""

    timer: str


@dataclass(frozen=True, slots=True)
class TransportError:
    """The transport failed; treated like a 503 (§8.1.3.1)."""


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over and can be forgotten."""


Action = Transmit | Deliver | Timeout | TransportError | Terminated
TxKey = tuple[object, ...]


def server_key(request: Request) -> TxKey:
    """Matching key of a server transaction (§17.2.3).

    With an RFC 3261 branch: branch, sent-by and method, with ACK matching its INVITE.
    Otherwise (RFC 2543 peers) the INVITE's Request-URI, From tag, Call-ID, CSeq number and
    top Via; the To tag is checked separately because an ACK carries the response's tag.
    """
    via = request.via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and branch.startswith(BRANCH_MAGIC):
        return ("3261", branch, via.sent_by, method)
    return (
        "2543",
        str(request.uri),
        request.from_tag,
        request.call_id,
        request.cseq.seq,
        str(via),
        method,
    )


def client_key(message: Request | Response) -> TxKey:
    """Matching key of a client transaction: top Via branch and CSeq method (§17.1.3)."""
    return (message.via.branch, message.cseq.method)


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, built by the transaction (§17.1.1.3)."""
    headers: list[tuple[str, str]] = [
        ("Via", str(request.via)),
        ("Max-Forwards", "70"),
    ]
    for name in ("route",):
        headers += [("Route", value) for value in request.headers.get_all(name)]
    headers += [
        ("From", request.headers.get("from") or ""),
        ("To", response.headers.get("to") or ""),
        ("Call-ID", request.call_id),
        ("CSeq", f"{request.cseq.seq} ACK"),
    ]
    return Request("ACK", request.uri, headers)


# Allowed transitions (Figures 5-8 of §17, Accepted from RFC 6026); TERMINATED is always
# allowed and not listed. A transition missing here is a bug of ours: LocalProtocolError.
_S = State
CLIENT_INVITE: Mapping[State, frozenset[State]] = {
    _S.CALLING: frozenset({_S.PROCEEDING, _S.ACCEPTED, _S.COMPLETED}),
    _S.PROCEEDING: frozenset({_S.PROCEEDING, _S.ACCEPTED, _S.COMPLETED}),
}
CLIENT_NON_INVITE: Mapping[State, frozenset[State]] = {
    _S.TRYING: frozenset({_S.PROCEEDING, _S.COMPLETED}),
    _S.PROCEEDING: frozenset({_S.PROCEEDING, _S.COMPLETED}),
}
SERVER_INVITE: Mapping[State, frozenset[State]] = {
    _S.PROCEEDING: frozenset({_S.ACCEPTED, _S.COMPLETED}),
    _S.COMPLETED: frozenset({_S.CONFIRMED}),
}
SERVER_NON_INVITE: Mapping[State, frozenset[State]] = {
    _S.TRYING: frozenset({_S.PROCEEDING, _S.COMPLETED}),
    _S.PROCEEDING: frozenset({_S.PROCEEDING, _S.COMPLETED}),
}


class Transaction:
    """Common machinery: state, named timers and the earliest deadline."""

    kind = "transaction"
    TRANSITIONS: ClassVar[Mapping[State, frozenset[State]]] = {}

    def __init__(self, request: Request, *, reliable: bool, timers: Timers) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.state = State.TERMINATED
        self._deadlines: dict[str, float] = {}
        self._interval = timers.t1  # the current retransmission interval (A, E or G)
        self.context: object = None  # the I/O layer's note of where the peer is

    @property
    def next_deadline(self) -> float | None:
        return min(self._deadlines.values()) if self._deadlines else None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _set(self, timer: str, at: float) -> None:
        self._deadlines[timer] = at

    def _enter(self, state: State) -> None:
        """Move to ``state`` if the class's transition table allows it."""
        if state not in self.TRANSITIONS.get(self.state, ()):
            raise LocalProtocolError(f"{type(self).__name__}: {self.state} -> {state}")
        self.state = state

    def _terminate(self) -> list[Action]:
        self.state = State.TERMINATED  # always allowed: timers, transport errors
        self._deadlines.clear()
        return [Terminated()]

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first."""
        actions: list[Action] = []
        while self._deadlines:
            timer, at = min(self._deadlines.items(), key=lambda item: item[1])
            if at > now or self.terminated:
                break
            del self._deadlines[timer]
            actions += self._fire(timer, at)
        return actions

    def transport_error(self) -> list[Action]:
        if self.terminated:
            return []
        return [TransportError(), *self._terminate()]

    def _fire(self, timer: str, at: float) -> list[Action]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.state.value}>"


class ClientInviteTransaction(Transaction):
    """§17.1.1, Figure 5, with RFC 6026's Accepted state."""

    TRANSITIONS = CLIENT_INVITE
    _ack: Request | None = None  # built on the first non-2xx final response (§17.1.1.3)

    def start(self, now: float) -> list[Action]:
        if self.state is not State.TERMINATED or self._deadlines:
            raise LocalProtocolError("transaction already started")
        self.state = State.CALLING
        if not self.reliable:
            self._set("A", now + self._interval)
        self._set("B", now + 64 * self.timers.t1)
        return [Transmit(self.request)]

    def receive_response(self, response: Response, now: float) -> list[Action]:
        code = response.status_code
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            self._deadlines.pop("A", None)
            if code < 200:
                self._enter(State.PROCEEDING)
                self._deadlines.pop("B", None)
                return [Deliver(response)]
            if code < 300:
                self._enter(State.ACCEPTED)
                self._deadlines.clear()
                self._set("M", now + 64 * self.timers.t1)
                return [Deliver(response)]
            self._enter(State.COMPLETED)
            self._deadlines.clear()
            self._ack = build_ack(self.request, response)
            self._set("D", now + (0.0 if self.reliable else self.timers.timer_d))
            return [Transmit(self._ack), Deliver(response)]
        if state is State.ACCEPTED and 200 <= code < 300:
            return [Deliver(response)]  # 2xx retransmission: the TU re-sends its ACK
        if state is State.COMPLETED and code >= 300 and self._ack is not None:
            return [Transmit(self._ack)]
        return []

    def _fire(self, timer: str, at: float) -> list[Action]:
        if timer == "A" and self.state is State.CALLING:
            self._interval *= 2
            self._set("A", at + self._interval)
            return [Transmit(self.request)]
        if timer == "B" and self.state is State.CALLING:
            return [Timeout("B"), *self._terminate()]
        if timer in ("D", "M"):
            return self._terminate()
        return []


class ClientNonInviteTransaction(Transaction):
    """§17.1.2, Figure 6."""

    TRANSITIONS = CLIENT_NON_INVITE

    def start(self, now: float) -> list[Action]:
        if self.state is not State.TERMINATED or self._deadlines:
            raise LocalProtocolError("transaction already started")
        self.state = State.TRYING
        if not self.reliable:
            self._set("E", now + self._interval)
        self._set("F", now + 64 * self.timers.t1)
        return [Transmit(self.request)]

    def receive_response(self, response: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []  # retransmissions in Completed are absorbed
        if response.status_code < 200:
            self._enter(State.PROCEEDING)
            return [Deliver(response)]
        self._enter(State.COMPLETED)
        self._deadlines.clear()
        self._set("K", now + (0.0 if self.reliable else self.timers.t4))
        return [Deliver(response)]

    def _fire(self, timer: str, at: float) -> list[Action]:
        if timer == "E" and self.state in (State.TRYING, State.PROCEEDING):
            if self.state is State.TRYING:
                self._interval = min(self._interval * 2, self.timers.t2)
            else:
                self._interval = self.timers.t2
            self._set("E", at + self._interval)
            return [Transmit(self.request)]
        if timer == "F":
            return [Timeout("F"), *self._terminate()]
        if timer == "K":
            return self._terminate()
        return []


class ServerInviteTransaction(Transaction):
    """§17.2.1, Figure 7, with RFC 6026's Accepted state.

    In Accepted the 2xx is retransmitted on the Timer G schedule until the TU reports the ACK
    (:meth:`ack_received`) — the UAS core duty of §13.3.1.4, kept here so that one clock
    drives it.
    """

    TRANSITIONS = SERVER_INVITE

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        timers: Timers,
        send_trying: bool = True,
    ) -> None:
        super().__init__(request, reliable=reliable, timers=timers)
        self.state = State.PROCEEDING
        self.last_response: Response | None = None
        self._initial: list[Action] = [Deliver(request)]
        if send_trying:
            # §17.2.1: a 100 Trying at once stops the client's INVITE retransmissions
            self.last_response = make_response(request, 100)
            self._initial.insert(0, Transmit(self.last_response))

    def initial_actions(self) -> list[Action]:
        actions, self._initial = self._initial, []
        return actions

    def receive_request(self, request: Request, now: float) -> list[Action]:
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self._enter(State.CONFIRMED)
                self._deadlines.pop("G", None)
                self._deadlines.pop("H", None)
                self._set("I", now + (0.0 if self.reliable else self.timers.t4))
            elif self.state is State.ACCEPTED:
                return [*self.ack_received(now), Deliver(request)]
            return []
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response:
            return [Transmit(self.last_response)]  # a retransmitted INVITE
        return []

    def ack_received(self, now: float) -> list[Action]:
        """The TU matched the ACK for our 2xx: stop retransmitting it."""
        self._deadlines.pop("G", None)
        return []

    def send_response(self, response: Response, now: float) -> list[Action]:
        if self.state is not State.PROCEEDING:
            raise LocalProtocolError(f"cannot send {response.status_code} in {self.state}")
        self.last_response = response
        code = response.status_code
        if code < 200:
            return [Transmit(response)]
        self._interval = self.timers.t1
        if code < 300:
            self._enter(State.ACCEPTED)
            if not self.reliable:
                self._set("G", now + self._interval)
            self._set("L", now + 64 * self.timers.t1)
        else:
            self._enter(State.COMPLETED)
            if not self.reliable:
                self._set("G", now + self._interval)
            self._set("H", now + 64 * self.timers.t1)
        return [Transmit(response)]

    def _fire(self, timer: str, at: float) -> list[Action]:
        if timer == "G" and self.state in (State.COMPLETED, State.ACCEPTED):
            self._interval = min(self._interval * 2, self.timers.t2)
            self._set("G", at + self._interval)
            assert self.last_response is not None
            return [Transmit(self.last_response)]
        if timer == "H" and self.state is State.COMPLETED:
            return [Timeout("H"), *self._terminate()]
        if timer in ("I", "L"):
            return self._terminate()
        return []


class ServerNonInviteTransaction(Transaction):
    """§17.2.2, Figure 8."""

    TRANSITIONS = SERVER_NON_INVITE

    def __init__(self, request: Request, *, reliable: bool, timers: Timers) -> None:
        super().__init__(request, reliable=reliable, timers=timers)
        self.state = State.TRYING
        self.last_response: Response | None = None

    def initial_actions(self) -> list[Action]:
        return [Deliver(self.request)]

    def receive_request(self, request: Request, now: float) -> list[Action]:
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_response:
            return [Transmit(self.last_response)]
        return []  # Trying: absorbed

    def send_response(self, response: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise LocalProtocolError(f"cannot send {response.status_code} in {self.state}")
        self.last_response = response
        if response.status_code < 200:
            self._enter(State.PROCEEDING)
        else:
            self._enter(State.COMPLETED)
            self._set("J", now + (0.0 if self.reliable else 64 * self.timers.t1))
        return [Transmit(response)]

    def _fire(self, timer: str, at: float) -> list[Action]:
        if timer == "J":
            return self._terminate()
        return []


ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


class TransactionLayer:
    """All transactions of an endpoint: matching (§17.1.3, §17.2.3) and one deadline heap.

    Pure: the caller feeds messages with ``now`` and calls :meth:`on_timer` at
    :attr:`next_deadline`. Returned actions are paired with their transaction.
    """

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self._clients: dict[TxKey, ClientTransaction] = {}
        self._servers: dict[TxKey, ServerTransaction] = {}
        # INVITE server transactions by (Call-ID, CSeq number, From tag): an ACK for a 2xx has a
        # new branch (§17.2.3 does not match it), so it is found here in O(1), not by a scan.
        self._invites: dict[tuple[str, int, str | None], ServerInviteTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- client side -------------------------------------------------------------------------
    def start_client(
        self, request: Request, now: float, *, reliable: bool
    ) -> tuple[ClientTransaction, list[Action]]:
        if request.method == "ACK":
            raise LocalProtocolError("ACK is sent without a transaction (§17.1.1.3)")
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = ClientInviteTransaction(request, reliable=reliable, timers=self.timers)
        else:
            tx = ClientNonInviteTransaction(request, reliable=reliable, timers=self.timers)
        key = client_key(request)
        if key in self._clients:
            raise LocalProtocolError("a client transaction with this branch exists")
        self._clients[key] = tx
        actions = tx.start(now)
        self._schedule(tx)
        return tx, actions

    def receive_response(
        self, response: Response, now: float
    ) -> tuple[ClientTransaction | None, list[Action]]:
        """Match a response to its client transaction; (None, []) for a stray response."""
        tx = self._clients.get(client_key(response))
        if tx is None:
            return None, []
        actions = tx.receive_response(response, now)
        self._after(tx)
        return tx, actions

    # -- server side -------------------------------------------------------------------------
    def match_server(self, request: Request) -> ServerTransaction | None:
        tx = self._servers.get(server_key(request))
        if tx is None:
            return None
        if server_key(request)[0] == "2543":
            # RFC 2543: the To tag must match the request's, or for ACK our response's
            if request.method == "ACK":
                sent = tx.last_response.to_tag if tx.last_response else None
                if request.to_tag != sent:
                    return None
            elif request.to_tag != tx.request.to_tag:
                return None
        return tx

    def receive_request(
        self, request: Request, now: float, *, reliable: bool
    ) -> tuple[ServerTransaction | None, list[Action]]:
        """Feed a request: a retransmission goes to its transaction, a new request creates one.

        Returns (None, []) for an ACK matching no transaction: that ACK is for a 2xx and
        belongs to the dialog layer (§17.2.3, §13.2.2.4).
        """
        tx = self.match_server(request)
        if tx is not None:
            actions = tx.receive_request(request, now)
            self._after(tx)
            return tx, actions
        if request.method == "ACK":
            return None, []
        new: ServerTransaction
        if request.method == "INVITE":
            new = ServerInviteTransaction(request, reliable=reliable, timers=self.timers)
            self._invites[_dialog_key(request)] = new
        else:
            new = ServerNonInviteTransaction(request, reliable=reliable, timers=self.timers)
        self._servers[server_key(request)] = new
        return new, new.initial_actions()

    def send_response(self, tx: ServerTransaction, response: Response, now: float) -> list[Action]:
        actions = tx.send_response(response, now)
        self._after(tx)
        return actions

    def find_invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2): same key, method INVITE."""
        key = server_key(cancel)
        tx = self._servers.get((*key[:-1], "INVITE"))
        return tx if isinstance(tx, ServerInviteTransaction) else None

    def accepted_invite_for_ack(self, ack: Request) -> ServerInviteTransaction | None:
        """The accepted INVITE an ACK for a 2xx belongs to (same Call-ID, CSeq, tags)."""
        tx = self._invites.get(_dialog_key(ack))
        return tx if tx is not None and tx.state is State.ACCEPTED else None

    def transport_error(self, tx: Transaction) -> list[Action]:
        actions = tx.transport_error()
        self._after(tx)
        return actions

    # -- time --------------------------------------------------------------------------------
    @property
    def next_deadline(self) -> float | None:
        while self._heap:
            at, _, tx = self._heap[0]
            if tx.next_deadline == at and not tx.terminated:
                return at
            # stale entry: the transaction moved on (a timer was stopped or rescheduled)
            heapq.heappop(self._heap)
            if not tx.terminated and tx.next_deadline is not None:
                self._schedule(tx)
        return None

    def on_timer(self, now: float) -> Iterator[tuple[Transaction, Action]]:
        """Fire every due timer; yields (transaction, action) pairs."""
        due: list[Transaction] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, tx = heapq.heappop(self._heap)
            if tx not in due:
                due.append(tx)
        for tx in due:
            for action in tx.on_timer(now):
                yield tx, action
            self._after(tx)

    def _schedule(self, tx: Transaction) -> None:
        at = tx.next_deadline
        if at is not None:
            heapq.heappush(self._heap, (at, next(self._counter), tx))

    def _after(self, tx: Transaction) -> None:
        if tx.terminated:
            self._forget(tx)
        else:
            self._schedule(tx)

    def _forget(self, tx: Transaction) -> None:
        if isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction):
            self._clients.pop(client_key(tx.request), None)
        else:
            key = server_key(tx.request)
            if self._servers.get(key) is tx:
                del self._servers[key]
            if isinstance(tx, ServerInviteTransaction):
                dialog = _dialog_key(tx.request)
                if self._invites.get(dialog) is tx:
                    del self._invites[dialog]


def _dialog_key(request: Request) -> tuple[str, int, str | None]:
    return request.call_id, request.cseq.seq, request.from_tag
