"""A small stateful proxy (RFC 3261 §16) composed from :mod:`cloudphone.sip.proxy` blocks.

One target per request (no forking): enough to sit in the middle of a call, record-route it,
relay provisional and final responses, forward ACKs for 2xx and in-dialog requests by loose
routing, and propagate CANCEL.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from cloudphone.sip.message import Request, Response, make_response
from cloudphone.sip.proxy import (
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
from cloudphone.sip.transaction import ServerInviteTransaction, State, Transaction
from cloudphone.sip.uri import URI, SipURI
from cloudphone.sipnet.endpoint import Endpoint, IncomingRequest, TransactionFailed
from cloudphone.sipnet.resolver import Target

__all__ = ["StatefulProxy"]

log = structlog.get_logger(__name__)

Locate = Callable[[Request], URI | None]


class StatefulProxy:
    """Proxies every request the endpoint receives. ``locate`` maps a request for one of
    our users to its target URI (None = 404); requests for other domains go to their
    Request-URI."""

    def __init__(self, endpoint: Endpoint, transport: str, locate: Locate) -> None:
        self.endpoint = endpoint
        self.transport = transport.upper()
        self.locate = locate
        host, port = endpoint.local_address(self.transport) or ("127.0.0.1", 5060)
        self.host, self.port = host, port
        params: tuple[tuple[str, str | None], ...] = (("lr", None),)
        if self.transport != "UDP":
            params = (("transport", self.transport.lower()), ("lr", None))
        self.record_route_uri = SipURI(host, port=port, params=params)
        self._salt = secrets.token_hex(8)
        self._forwarded: dict[Transaction, tuple[Request, Target]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        endpoint.on_request = self._on_request
        endpoint.on_cancel = self._on_cancel

    def is_me(self, uri: URI) -> bool:
        return (
            isinstance(uri, SipURI)
            and uri.host == self.host
            and (uri.port or 5060) == self.port
            and uri.user is None
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ----------------------------------------------------------------------------
    def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if incoming.transaction is None:  # ACK for a 2xx: forwarded without a transaction
            self._spawn(self._forward_stateless(request))
            return
        too_many = check_max_forwards(request)
        if too_many is not None:
            incoming.send(too_many)
            return
        if detect_loop(request, (self.host, self.port), self._salt):
            incoming.respond(482)  # §16.3 step 4
            return
        branch = loop_branch(request, self._salt)
        preprocess_route(request, self.is_me)
        target_uri: URI | None = None
        if "route" not in request.headers:
            target_uri = self.locate(request)
            if target_uri is None and self.is_me(request.uri):
                incoming.respond(404)
                return
        out = forward_copy(request, target_uri)
        if out.method in ("INVITE", "SUBSCRIBE"):
            record_route(out, self.record_route_uri)
        self._spawn(self._forward(incoming, out, branch))

    async def _forward(self, incoming: IncomingRequest, out: Request, branch: str) -> None:
        tx = incoming.transaction
        assert tx is not None
        try:
            hop = next_hop(out)
            if not isinstance(hop, SipURI):
                incoming.respond(416)
                return
            targets = await self.endpoint.resolver.resolve(hop)
            if not targets:
                incoming.respond(404)
                return
            self._forwarded[tx] = (out, targets[0])
            response = await self.endpoint.request(
                out,
                targets[0],
                branch=branch,
                on_provisional=lambda r: self._relay(incoming, r),
            )
            self._relay(incoming, response)
        except TransactionFailed as failure:
            if self._still_pending(tx):
                incoming.respond(408 if failure.timeout else 503)
        finally:
            self._forwarded.pop(tx, None)

    def _on_cancel(self, invite: ServerInviteTransaction) -> None:
        """§16.10: CANCEL the forwarded INVITE; its 487 is relayed like any response."""
        forwarded = self._forwarded.get(invite)
        if forwarded is None:
            self.endpoint.respond(invite, make_response(invite.request, 487))
            return
        out, target = forwarded
        cancel = Request(
            "CANCEL",
            out.uri,
            [("Route", r) for r in out.headers.get_all("route")]
            + [
                ("Max-Forwards", "70"),
                ("From", out.headers.get("from") or ""),
                ("To", out.headers.get("to") or ""),
                ("Call-ID", out.call_id),
                ("CSeq", f"{out.cseq.seq} CANCEL"),
            ],
        )
        self._spawn(self._send_cancel(cancel, target, out.via.branch or ""))

    async def _send_cancel(self, cancel: Request, target: Target, branch: str) -> None:
        try:
            await self.endpoint.request(cancel, target, branch=branch)  # same branch (§9.1)
        except TransactionFailed:
            log.info("sip.proxy.cancel_failed", call_id=cancel.call_id)

    async def _forward_stateless(self, request: Request) -> None:
        """ACK for a 2xx and other transaction-less requests (§16.11): route and send on."""
        preprocess_route(request, self.is_me)
        if check_max_forwards(request) is not None:
            return
        out = forward_copy(request)
        hop = next_hop(out)
        if not isinstance(hop, SipURI) or self.is_me(hop):
            return
        targets = await self.endpoint.resolver.resolve(hop)
        if not targets:
            return
        flow = await self.endpoint.flow_to(targets[0])
        push_via(out, flow.transport, self.host, self.port, loop_branch(request, self._salt))
        try:
            flow.send(bytes(out))
        except ConnectionError:
            log.info("sip.proxy.stateless_failed", call_id=out.call_id)

    # -- responses ---------------------------------------------------------------------------
    @staticmethod
    def _still_pending(tx: Transaction) -> bool:
        return tx.state in (State.PROCEEDING, State.TRYING)

    def _relay(self, incoming: IncomingRequest, response: Response) -> None:
        """§16.7: drop our Via and pass the response up (not 100 Trying, step 5)."""
        tx = incoming.transaction
        if tx is None or response.status_code == 100 or not self._still_pending(tx):
            return
        relayed = Response(
            response.status_code, response.reason, response.headers.copy(), response.body
        )
        if pop_via(relayed) is None:
            return  # no Via left: the response was for us
        incoming.send(relayed)
