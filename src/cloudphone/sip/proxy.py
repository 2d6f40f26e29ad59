"""Proxy building blocks (RFC 3261 §16): small pure functions a stateful proxy composes.

Each takes and returns messages; none keeps state. The order in which a proxy uses them is
§16.3 (validate: Max-Forwards, loop), §16.4 (Route pre-processing), §16.6 (forward: copy,
Request-URI, Max-Forwards, Record-Route, next hop, Via), §16.7 (responses: pop Via).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cloudphone.sip.headers import BRANCH_MAGIC, Address, Via
from cloudphone.sip.message import Request, Response, make_response
from cloudphone.sip.uri import URI, SipURI

__all__ = [
    "cancel_matches",
    "check_max_forwards",
    "detect_loop",
    "forward_copy",
    "loop_branch",
    "next_hop",
    "pop_via",
    "preprocess_route",
    "push_via",
    "record_route",
]


def check_max_forwards(request: Request) -> Response | None:
    """§16.3 step 3: 483 when Max-Forwards is 0 (OPTIONS may be answered locally instead)."""
    if request.max_forwards == 0:
        return make_response(request, 483)
    return None


def forward_copy(request: Request, target: URI | None = None) -> Request:
    """§16.6 steps 1-3: a copy with the new Request-URI and Max-Forwards decremented."""
    headers = request.headers.copy()
    out = Request(request.method, target or request.uri, headers, request.body)
    max_forwards = request.max_forwards
    out.headers.set("Max-Forwards", str(70 if max_forwards is None else max_forwards - 1))
    return out


def record_route(request: Request, proxy_uri: SipURI) -> None:
    """§16.6 step 4: stay on the path of the dialog; ``;lr`` marks us a loose router."""
    uri = proxy_uri if proxy_uri.has_param("lr") else proxy_uri.with_params(lr=None)
    request.headers.prepend("Record-Route", f"<{uri}>")


def preprocess_route(request: Request, is_me: Callable[[URI], bool]) -> Request:
    """§16.4: undo a strict router's rewrite, and remove our own top Route entry."""
    if is_me(request.uri) and "route" in request.headers:
        # the previous hop was a strict router: the real target is the last Route
        routes = request.headers.get_all("route")
        request.uri = Address.parse(routes[-1]).uri
        request.headers.remove("route")
        for value in routes[:-1]:
            request.headers.add("Route", value)
    routes = request.headers.get_all("route")
    if routes and is_me(Address.parse(routes[0]).uri):
        request.headers.pop_first_value("route")
    return request


def next_hop(request: Request) -> URI:
    """§16.6 step 6-7: where to send: the top Route if loose, else the Request-URI.

    A Route without ``;lr`` is a strict router (RFC 2543): it becomes the Request-URI and
    the Request-URI goes to the end of the Route set (§16.6 step 6).
    """
    routes = request.headers.get_all("route")
    if not routes:
        return request.uri
    top = Address.parse(routes[0]).uri
    if isinstance(top, SipURI) and top.is_loose_router:
        return top
    request.headers.pop_first_value("route")
    request.headers.add("Route", f"<{request.uri}>")
    request.uri = top
    return top


def loop_branch(request: Request, salt: str = "", *, top_via: Via | None = None) -> str:
    """A branch whose tail hashes the fields §16.6 step 8 names (Request-URI as received, tags,
    Call-ID, CSeq number, Proxy-Require, Proxy-Authorization, Route, topmost Via), so that the
    same request coming back gives the same tail (loop detection, §16.3 step 4)."""
    h = hashlib.sha256(salt.encode())
    via = top_via if top_via is not None else request.via
    for part in (
        str(request.uri),
        request.to_tag or "",
        request.from_tag or "",
        request.call_id,
        str(request.cseq.seq),
        request.headers.get("proxy-require") or "",
        request.headers.get("proxy-authorization") or "",
        ",".join(request.headers.get_all("route")),
        f"{via.sent_by}{via.branch}",
    ):
        h.update(part.encode("utf-8", "surrogateescape") + b"\x00")
    return f"{BRANCH_MAGIC}-cp-{h.hexdigest()[:20]}"


def detect_loop(request: Request, sent_by: tuple[str, int | None], salt: str = "") -> bool:
    """§16.3 step 4: a Via of ours whose branch carries this very request's hash is a loop
    (482); a Via of ours with another hash is a spiral (e.g. a changed Request-URI), fine.

    The hash is recomputed with the Via that was on top when we forwarded the request the
    first time: the one just below our own Via.
    """
    vias = request.headers.vias()
    mine = (sent_by[0].lower(), sent_by[1])
    for i, via in enumerate(vias[:-1]):
        if via.sent_by == mine and via.branch:
            tail = loop_branch(request, salt, top_via=vias[i + 1]).rsplit("-", 1)[1]
            if via.branch.endswith(tail):
                return True
    return False


def push_via(
    request: Request,
    transport: str,
    host: str,
    port: int | None,
    branch: str,
    *,
    rport: bool = True,
) -> Via:
    """§16.6 step 8: our Via on top; ``rport`` asks for RFC 3581 symmetric responses."""
    host_port = host if port is None else f"{host}:{port}"
    text = f"SIP/2.0/{transport.upper()} {host_port};branch={branch}"
    if rport:
        text += ";rport"
    request.headers.prepend("Via", text)
    return Via.parse(text)


def pop_via(response: Response) -> Via | None:
    """§16.7 step 3: remove our (top) Via. Returns the Via the response now goes to, or None
    when no Via is left: then the response was for this element itself."""
    if response.headers.pop_first_value("via") is None:
        return None
    return response.via if "via" in response.headers else None


def cancel_matches(cancel: Request, invite: Request) -> bool:
    """§9.2: a CANCEL matches the INVITE with the same Request-URI, Call-ID, To, From tag,
    CSeq number and top Via (branch)."""
    return (
        cancel.uri == invite.uri
        and cancel.call_id == invite.call_id
        and cancel.from_tag == invite.from_tag
        and cancel.to_tag == invite.to_tag
        and cancel.cseq.seq == invite.cseq.seq
        and cancel.via.branch == invite.via.branch
        and cancel.via.sent_by == invite.via.sent_by
    )
