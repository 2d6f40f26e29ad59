"""Minimal dialog state for a UAC or UAS (RFC 3261 §12): enough to ACK a 2xx and send BYE."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudphone.sip.headers import Address
from cloudphone.sip.message import Request, Response
from cloudphone.sip.uri import URI

__all__ = ["Dialog"]


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # From of our requests, without tag
    remote_uri: str  # To of our requests, without tag
    remote_target: URI
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0

    @classmethod
    def from_uac_response(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: route set = Record-Route reversed, remote target = Contact."""
        contacts = response.headers.addresses("contact")
        if not contacts:
            raise ValueError("2xx without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=response.to_tag or "",
            local_uri=_without_params(request.headers.get("from") or ""),
            remote_uri=_without_params(request.headers.get("to") or ""),
            remote_target=contacts[0].uri,
            route_set=list(reversed(response.headers.get_all("record-route"))),
            local_seq=request.cseq.seq,
        )

    @classmethod
    def from_uas_request(cls, request: Request, local_tag: str) -> Dialog:
        """§12.1.1: route set = Record-Route in order, remote target = Contact."""
        contacts = request.headers.addresses("contact")
        if not contacts:
            raise ValueError("request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_uri=_without_params(request.headers.get("to") or ""),
            remote_uri=_without_params(request.headers.get("from") or ""),
            remote_target=contacts[0].uri,
            route_set=request.headers.get_all("record-route"),
            local_seq=0,
        )

    def _headers(self, method: str, seq: int) -> list[tuple[str, str]]:
        headers = [("Route", route) for route in self.route_set]
        headers += [
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        return headers

    def request_uri(self) -> URI:
        """§12.2.1.1: with a strict first route, that route is the Request-URI (not handled
        here: we only build loose-route requests, as every RFC 3261 proxy record-routes)."""
        return self.remote_target

    def ack(self, invite_seq: int) -> Request:
        """ACK for a 2xx: a new transaction-less request with the INVITE's CSeq (§13.2.2.4)."""
        return Request("ACK", self.request_uri(), self._headers("ACK", invite_seq))

    def request(self, method: str) -> Request:
        """A new in-dialog request (BYE, re-INVITE ...) with the next CSeq (§12.2.1.1)."""
        self.local_seq += 1
        return Request(method, self.request_uri(), self._headers(method, self.local_seq))

    @property
    def first_hop(self) -> URI:
        """Where in-dialog requests go first: the top route, or the remote target."""
        if self.route_set:
            return Address.parse(self.route_set[0]).uri
        return self.remote_target


def _without_params(value: str) -> str:
    address = Address.parse(value)
    address.params.remove("tag")
    return str(address)
