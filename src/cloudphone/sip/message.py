"""SIP messages: parsing one datagram, lazy structured headers, serialisation (RFC 3261 §7, §25).

Parsing splits the header section once and indexes header names; Via, From/To, CSeq, Contact
are parsed only when asked for and then cached, so extracting a transaction key touches only
what it needs.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, cast

from cloudphone.sip.errors import SIPSyntaxError
from cloudphone.sip.headers import (
    KNOWN_METHODS,
    LIST_HEADERS,
    Address,
    CSeq,
    Via,
    canonical_name,
    is_token,
    split_commas,
)
from cloudphone.sip.uri import URI, parse_uri

__all__ = [
    "Headers",
    "Message",
    "Request",
    "Response",
    "TransactionKey",
    "make_response",
    "parse_message",
]

# Folded header lines (§7.3.1): a line starting with whitespace continues the previous one.
_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)", re.DOTALL)
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_REASON_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Mandatory in every request and response we accept (§8.1.1, §8.2.2, §20).
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_MAX_DELTA = 2**32 - 1  # delta-seconds cap (§20.19, §10.2.1)


class Headers:
    """Header lines in wire order, looked up by canonical (long, lower-case) name.

    Values keep their original text; structured views (:class:`Via`, :class:`Address`,
    :class:`CSeq`) are built on first access and cached until the headers change.
    """

    __slots__ = ("_cache", "_index", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # (name as written, ":", value as written): values are trimmed when read, so parsing
        # can keep the partitioned line as it is
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            canonical_name(name)  # reject a non-token name early
            self._items.append((name, ":", value))
        # canonical name of each line, in order: ``list.index`` finds the first line of a
        # header at C speed, and building it costs less than a dict for ~15 headers
        self._index: list[str] | None = None
        # structured views by header key; values are Via / Address / CSeq / list[Via]
        self._cache: dict[str, Any] = {}

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]], index: list[str]) -> Headers:
        self = cls.__new__(cls)
        self._items = items
        self._index = index
        self._cache = {}
        return self

    def _lookup(self) -> list[str]:
        """Canonical name of every line (built once per change)."""
        index = self._index
        if index is None:
            index = self._index = _line_keys(self._items)
        return index

    def _at(self, key: str) -> int | None:
        keys = self._index or self._lookup()
        return keys.index(key) if key in keys else None

    def _changed(self) -> None:
        self._index = None
        self._cache.clear()

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of the header ``name`` (any spelling, compact forms included)."""
        at = self._at(canonical_name(name))
        return default if at is None else self._items[at][2].strip(" \t")

    def _first(self, key: str) -> str | None:
        """:meth:`get` for a name that is already canonical (the hot path)."""
        keys = self._index or self._lookup()
        if key not in keys:
            return None
        return self._items[keys.index(key)][2].strip(" \t")

    def _positions(self, key: str) -> list[int]:
        return [i for i, k in enumerate(self._index or self._lookup()) if k == key]

    def get_all(self, name: str) -> list[str]:
        """All values, in order; list headers are split at their commas (§7.3.1)."""
        key = canonical_name(name)
        values = [self._items[i][2].strip(" \t") for i in self._positions(key)]
        if key in LIST_HEADERS:
            return [v for value in values for v in split_commas(value)]
        return values

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and canonical_name(name) in (self._index or self._lookup())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(name, value.strip(" \t")) for name, _, value in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        canonical_name(name)
        self._items.append((name, ":", value))
        self._changed()

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first line of the same header, or at the top (Via, Route pushes)."""
        at = self._at(canonical_name(name)) or 0
        self._items.insert(at, (name, ":", value))
        self._changed()

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line, keeping the first line's position."""
        positions = self._positions(canonical_name(name))
        if not positions:
            self.add(name, value)
            return
        first = positions[0]
        self._items[first] = (self._items[first][0], ":", value)
        drop = set(positions[1:])
        self._items = [item for i, item in enumerate(self._items) if i not in drop]
        self._changed()

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; returns how many were removed."""
        key = canonical_name(name)
        before = len(self._items)
        self._items = [item for item in self._items if _canonical(item[0]) != key]
        self._changed()
        return before - len(self._items)

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first value of a list header (pop a Via or a Route, §16.4, §16.7)."""
        at = self._at(canonical_name(name))
        if at is None:
            return None
        raw_name, _, value = self._items[at]
        values = split_commas(value.strip(" \t"))
        if len(values) == 1:
            del self._items[at]
        else:
            self._items[at] = (raw_name, ":", ", ".join(values[1:]))
        self._changed()
        return values[0]

    def copy(self) -> Headers:
        return Headers._from_parsed(list(self._items), list(self._lookup()))

    # -- structured, cached views -----------------------------------------------------------

    def vias(self) -> list[Via]:
        cached = self._cache.get("via")
        if cached is None:
            cached = [Via.parse(v) for v in self.get_all("via")]
            self._cache["via"] = cached
        return cached

    def top_via(self) -> Via:
        cached = self._cache.get("via0")
        if cached is None:
            first = self._first("via")
            if first is None:
                raise SIPSyntaxError("missing Via")
            cached = Via.parse(split_commas(first)[0] if "," in first else first)
            self._cache["via0"] = cached
        return cached

    def address(self, name: str) -> Address:
        return self._address(_CANONICAL_LOWER.get(name) or canonical_name(name))

    def _address(self, key: str) -> Address:
        cached = self._cache.get(key)
        if cached is None:
            value = self._first(key)
            if value is None:
                raise SIPSyntaxError(f"missing {key}")
            cached = Address.parse(value)
            self._cache[key] = cached
        return cached

    def addresses(self, name: str) -> list[Address]:
        """Contact, Route, Record-Route ... as parsed name-addrs (``*`` is not an address)."""
        return [Address.parse(v) for v in self.get_all(name)]

    def cseq(self) -> CSeq:
        cached = self._cache.get("cseq")
        if cached is None:
            value = self._first("cseq")
            if value is None:
                raise SIPSyntaxError("missing CSeq")
            cached = CSeq.parse(value)
            self._cache["cseq"] = cached
        return cached

    def delta_seconds(self, name: str) -> int | None:
        """An integer header such as Expires or Min-Expires (§20.19); None if absent."""
        value = self.get(name)
        if value is None:
            return None
        if not value.isdigit() or not value.isascii() or len(value) > 10:
            raise SIPSyntaxError(f"malformed {name}")
        number = int(value)
        return min(number, _MAX_DELTA)


class TransactionKey(NamedTuple):
    branch: str | None
    sent_by: tuple[str, int | None]
    cseq: int
    method: str  # the CSeq method
    call_id: str
    from_tag: str | None
    to_tag: str | None


class Message:
    """Common part of :class:`Request` and :class:`Response`."""

    __slots__ = ("body", "headers")

    headers: Headers
    body: bytes

    def _start_line(self) -> str:
        raise NotImplementedError

    # -- shortcuts for the headers every transaction needs -----------------------------------
    @property
    def call_id(self) -> str:
        value = self.headers._first("call-id")
        if value is None:
            raise SIPSyntaxError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cached = self.headers._cache.get("cseq")
        return cached if cached is not None else self.headers.cseq()

    @property
    def via(self) -> Via:
        """The top Via."""
        cached = self.headers._cache.get("via0")
        return cached if cached is not None else self.headers.top_via()

    @property
    def from_(self) -> Address:
        return self.headers.address("from")

    @property
    def to(self) -> Address:
        return self.headers.address("to")

    @property
    def from_tag(self) -> str | None:
        address = self.headers._cache.get("from") or self.headers._address("from")
        return address.tag

    @property
    def to_tag(self) -> str | None:
        address = self.headers._cache.get("to") or self.headers._address("to")
        return address.tag

    def transaction_key(self) -> TransactionKey:
        """Everything transaction and dialog matching reads (§17.1.3, §17.2.3, §12), in one
        call: top Via branch and sent-by, CSeq, Call-ID, From and To tags."""
        h = self.headers
        cache = h._cache
        keys = h._index or h._lookup()
        items = h._items
        try:
            via = cache.get("via0")
            if via is None:
                value = items[keys.index("via")][2].strip(" \t")
                via = cache["via0"] = Via.parse(split_commas(value)[0] if "," in value else value)
            from_ = cache.get("from")
            if from_ is None:
                from_ = cache["from"] = Address.parse(items[keys.index("from")][2].strip(" \t"))
            to = cache.get("to")
            if to is None:
                to = cache["to"] = Address.parse(items[keys.index("to")][2].strip(" \t"))
            call_id = items[keys.index("call-id")][2].strip(" \t")
        except ValueError:  # list.index: a mandatory header is missing
            raise SIPSyntaxError("missing Via, From, To or Call-ID") from None
        cseq = cache.get("cseq") or h.cseq()
        return TransactionKey(
            via.branch, via.sent_by, cseq.seq, cseq.method, call_id, from_.tag, to.tag
        )

    def validate(self) -> None:
        """Parse every structured header we know, raising :class:`SIPSyntaxError` if one is
        malformed (parsing is otherwise lazy)."""
        h = self.headers
        h.vias()
        # URIs inside name-addrs are parsed lazily too: touch them
        self.from_.uri  # noqa: B018
        self.to.uri  # noqa: B018
        for name in ("contact", "route", "record-route"):
            for value in h.get_all(name):
                if value != "*":
                    Address.parse(value).uri  # noqa: B018
        for name in ("expires", "min-expires", "max-forwards"):
            h.delta_seconds(name)

    def to_bytes(self) -> bytes:
        """Wire form; Content-Length always states the real body length (§20.14)."""
        lines = [self._start_line()]
        length = str(len(self.body))
        has_length = False
        for name, _, value in self.headers._items:
            value = value.strip(" \t")
            if _canonical(name) == "content-length":
                if has_length:
                    continue
                has_length = True
                value = length
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {length}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not is_token(method):
            raise ValueError(f"method must be a token: {method!r}")
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.delta_seconds("max-forwards")
        return value

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("reason", "status_code")

    def __init__(
        self,
        status_code: int,
        reason: str = "",
        headers: Headers | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not 100 <= status_code <= 699:
            raise ValueError(f"status code out of range: {status_code}")
        self.status_code = status_code
        self.reason = reason
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status_code} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        return self.status_code < 200

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.reason}>"


def _canonical(name: str) -> str:
    return _known_names.get(name) or canonical_name(name.rstrip(" \t"))


def _line_keys(items: list[tuple[str, str, str]]) -> list[str]:
    if not all(map(_SEP_OF, items)):
        bad = next(item for item in items if not item[1])
        _no_colon(bad[0])
    keys: list[str | None] = list(map(_known_names.get, map(_NAME_OF, items)))
    if None in keys:
        keys = [
            key or canonical_name(item[0].rstrip(" \t"))
            for key, item in zip(keys, items, strict=True)
        ]
    return cast(list[str], keys)


_NAME_OF = operator.itemgetter(0)
_SEP_OF = operator.itemgetter(1)


def _no_colon(line: str) -> str:
    raise SIPSyntaxError(f"header line without colon: {line[:40]!r}")


_CANONICAL_LOWER = {"from": "from", "to": "to", "contact": "contact", "route": "route"}

# Fast path for the usual spellings; canonical_name() handles the rest.
_known_names: dict[str, str] = {
    name: canonical_name(name)
    for name in (
        "Via v To t From f Call-ID Call-Id i CSeq Contact m Content-Length l Content-Type c "
        "Max-Forwards Expires Route Record-Route Allow Supported User-Agent Server Subject s "
        "Authorization WWW-Authenticate Proxy-Authenticate Proxy-Authorization Min-Expires "
        "Require Proxy-Require Accept Date Event k Allow-Events"
    ).split()
}


def _split_header_lines(lines: list[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Header lines as (name, ":", value) and their canonical names.

    The fast path assumes the usual: no folding, well-known names. Anything else (a folded
    line, an unknown or oddly spaced name, a line without colon) takes the careful path.
    """
    items = [line.partition(":") for line in lines]
    keys: list[str | None] = list(map(_known_names.get, map(_NAME_OF, items)))
    if None in keys or not all(map(_SEP_OF, items)):
        block = "\r\n".join(lines)
        if "\r\n " in block or "\r\n\t" in block or block[:1] in (" ", "\t"):
            # §7.3.1: a line starting with whitespace continues the previous one
            block = _FOLD_RE.sub(" ", block)
            items = [line.partition(":") for line in block.split("\r\n")]
        return items, _line_keys(items)
    return items, cast(list[str], keys)


def parse_message(data: bytes) -> Request | Response:
    """Parse one SIP message received as a datagram (RFC 3261 §7, §18.3).

    The header section must end with an empty line. With Content-Length the body is that many
    octets and anything after it is ignored; without it the body is the rest of the datagram.
    Raises :class:`SIPSyntaxError` (status 400, or 505 for another SIP version).
    """
    if data[:2] == b"\r\n":
        # §7.5: CRLFs before the start line are ignored
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if data.endswith(b"\r\n"):
            end = len(data) - 2
        else:
            raise SIPSyntaxError("no empty line after the header section")
        body_start = len(data)
    else:
        body_start = end + 4
    lines = data[:end].decode("utf-8", "surrogateescape").split("\r\n")
    start = lines[0]
    items: list[tuple[str, str, str]]
    index: list[str]
    if len(lines) > 1:
        items, index = _split_header_lines(lines[1:])
    else:
        items, index = [], []
    headers = Headers.__new__(Headers)
    headers._items = items
    headers._index = index
    cache: dict[str, Any] = {}
    headers._cache = cache

    message: Request | Response
    if start[:4] == "SIP/":
        match = _STATUS_RE.fullmatch(start)
        if match is None:
            version = start.split(" ", 1)[0]
            if _VERSION_RE.fullmatch(version) and version.upper() != "SIP/2.0":
                raise SIPSyntaxError(f"unsupported version {version}", 505)
            raise SIPSyntaxError(f"malformed status line {start[:60]!r}")
        code, reason = match.groups()
        if reason and _REASON_BAD.search(reason):
            raise SIPSyntaxError("control character in reason phrase")
        message = Response.__new__(Response)
        message.status_code = int(code)
        message.reason = reason
        method = None
    else:
        parts = start.split(" ")
        if len(parts) != 3 or not parts[1]:
            raise SIPSyntaxError(f"malformed request line {start[:60]!r}")
        method, uri_text, version = parts
        if version != "SIP/2.0":
            if version.upper() == "SIP/2.0":
                pass  # the version token is case-insensitive (§7.1)
            elif _VERSION_RE.fullmatch(version):
                raise SIPSyntaxError(f"unsupported version {version}", 505)
            else:
                raise SIPSyntaxError(f"malformed request line {start[:60]!r}")
        if method not in _METHODS and not is_token(method):
            raise SIPSyntaxError("method is not a token")
        if uri_text[0] == "<":
            raise SIPSyntaxError("Request-URI must not be enclosed in <>")  # §8.1.1.1
        message = Request.__new__(Request)
        message.method = method
        message.uri = parse_uri(uri_text)
    message.headers = headers

    if not _MANDATORY_SET.issubset(index):
        missing = sorted(_MANDATORY_SET.difference(index))
        raise SIPSyntaxError(f"missing mandatory header {missing[0]}")
    cseq = CSeq.parse(items[index.index("cseq")][2].strip(" \t"))
    cache["cseq"] = cseq
    if method is not None and cseq.method != method:
        raise SIPSyntaxError("CSeq method does not match the request method")  # §8.1.1.5
    if "max-forwards" in index:
        value = items[index.index("max-forwards")][2].strip(" \t")
        if not value.isdigit() or not value.isascii() or int(value) > 255:
            raise SIPSyntaxError("malformed Max-Forwards")
    if "expires" in index:
        value = items[index.index("expires")][2].strip(" \t")
        if not value.isdigit() or not value.isascii() or len(value) > 10:
            raise SIPSyntaxError("malformed Expires")  # delta-seconds (§20.19)

    if "content-length" not in index:
        message.body = data[body_start:]
    else:
        value = items[index.index("content-length")][2].strip(" \t")
        if not value.isdigit() or not value.isascii():
            raise SIPSyntaxError("malformed Content-Length")
        length = int(value)
        if body_start + length > len(data):
            raise SIPSyntaxError("body shorter than Content-Length")  # §18.3
        message.body = data[body_start : body_start + length]
    return message


_METHODS = KNOWN_METHODS
_MANDATORY_SET = frozenset(_MANDATORY)


# Headers copied from request to response (§8.2.6.2).
_COPIED = ("via", "from", "to", "call-id", "cseq")
REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
}


def make_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per §8.2.6.2: Via, From, To, Call-ID and CSeq copied; a To
    tag added when given and the request had none (not for 100 Trying, §8.2.6.2);
    Record-Route copied into 101-299 responses, which may establish a dialog (§12.1.1)."""
    out: list[tuple[str, str]] = []
    dialog_forming = 100 < status_code < 300
    for name, _, raw in request.headers._items:
        key = _canonical(name)
        value = raw.strip(" \t")
        if key == "record-route" and dialog_forming:
            out.append((name, value))  # §12.1.1: in order, unchanged
        elif key in _COPIED:
            if key == "to" and to_tag and status_code > 100 and request.to.tag is None:
                value = f"{value};tag={to_tag}"
            out.append((name, value))
    if status_code == 100 and "timestamp" in request.headers:
        out.append(("Timestamp", request.headers.get("timestamp") or ""))  # §8.2.6.1
    out.extend(headers)
    return Response(status_code, reason or REASONS.get(status_code, ""), out, body)
