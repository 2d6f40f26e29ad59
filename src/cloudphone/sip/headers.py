"""Structured header values: Via, name-addr (From/To/Contact/Route), CSeq (RFC 3261 §25.1, §20).

Each is parsed from the header's text only when someone asks (see :class:`Headers`), because a
proxy or a push gateway touches a handful of headers and forwards the rest verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from cloudphone.sip.errors import SIPSyntaxError
from cloudphone.sip.uri import URI, SipURI, parse_uri

__all__ = [
    "Address",
    "CSeq",
    "Params",
    "Via",
    "canonical_name",
    "quote",
    "split_commas",
    "unquote_string",
]

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"[^"\\\r\n]*(?:\\[\x00-\x09\x0b\x0c\x0e-\x7f][^"\\\r\n]*)*"'
_LWS = r"[ \t]*"
# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string (§25.1)
_PARAM_RE = re.compile(
    rf"{_LWS};{_LWS}({_TOKEN})(?:{_LWS}={_LWS}({_QUOTED}|[A-Za-z0-9\-.!%*_+`'~\[\]:]+))?"
)
_PVALUE = r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+"
_SIMPLE_PARAMS_RE = re.compile(rf"(?:{_LWS};{_LWS}{_TOKEN}(?:{_LWS}={_LWS}{_PVALUE})?)*{_LWS}")
_PARAM_SPACE_RE = re.compile(r"[ \t]+")
_NAME_ADDR_RE = re.compile(
    rf"[ \t]*(?:({_QUOTED})|({_TOKEN}(?:[ \t]+{_TOKEN})*))?[ \t]*<([^<>\"]*)>"
)
_VIA_RE = re.compile(
    rf"SIP{_LWS}/{_LWS}(2\.0){_LWS}/{_LWS}({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    rf"(?:{_LWS}:{_LWS}([0-9]{{1,5}}))?",
    re.IGNORECASE,
)
# The usual spelling, case-sensitive (about twice as fast); other spellings use _VIA_RE.
_VIA_FULL_RE = re.compile(
    rf"(SIP/2\.0)/({_TOKEN})[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    rf"(?::([0-9]{{1,5}}))?({_SIMPLE_PARAMS_RE.pattern})"
)
KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    "MESSAGE UPDATE".split()
)
_CSEQ_RE = re.compile(rf"([0-9]{{1,10}})[ \t]+({_TOKEN})")
_DISPLAY_TOKENS_RE = re.compile(rf"{_TOKEN}(?:[ \t]+{_TOKEN})*")

# Compact forms (§7.3.3, §20) and the canonical spelling used when we write a header.
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
}
_NAME_CACHE: dict[str, str] = {}

# Headers whose grammar is a comma-separated list (§7.3.1); the others (From, To, Call-ID,
# Date, the authentication headers ...) may carry commas inside a single value.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "path",
        "service-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "allow-events",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
        "reason",
    }
)


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (``v`` → ``via``); raises on a non-token name."""
    cached = _NAME_CACHE.get(name)
    if cached is not None:
        return cached
    if not _TOKEN_RE.fullmatch(name):
        raise SIPSyntaxError(f"malformed header name {name[:40]!r}")
    lower = name.lower()
    canonical = _COMPACT.get(lower, lower)
    if len(_NAME_CACHE) < 2048:
        _NAME_CACHE[name] = canonical
    return canonical


def quote(text: str) -> str:
    """A quoted-string (§25.1): backslash-escape ``"`` and ``\\``."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_string(text: str) -> str:
    """Inverse of :func:`quote` for a value that may or may not be quoted."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        if "\\" not in text:
            return text[1:-1]
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def split_commas(value: str) -> list[str]:
    """Split a list header value at commas outside quotes and angle brackets (§7.3.1)."""
    if "," not in value:
        return [value]
    out: list[str] = []
    start = 0
    in_quote = in_angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if in_quote:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            out.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if in_quote:
        raise SIPSyntaxError("unterminated quoted string")
    out.append(value[start:].strip(" \t"))
    if any(not item for item in out):
        raise SIPSyntaxError("empty element in header list")
    return out


class Params:
    """Header parameters in order; names compare case-insensitively (§7.3.1).

    Parsed headers keep the validated parameter text and split it only when the whole list
    is needed; a single lookup (``branch``, ``tag``) is one regex search.
    """

    __slots__ = ("_items", "_text")

    def __init__(self, items: Iterable[tuple[str, str | None]] = ()) -> None:
        self._items: list[tuple[str, str | None]] | None = list(items)
        self._text: str | None = None

    @classmethod
    def _lazy(cls, text: str) -> Params:
        """Parameters from text already validated by ``_SIMPLE_PARAMS_RE``; split on demand."""
        self = cls.__new__(cls)
        self._items = None
        self._text = text
        return self

    def _list(self) -> list[tuple[str, str | None]]:
        items = self._items
        if items is None:
            rest = self._text or ""
            if " " in rest or "\t" in rest:
                rest = _PARAM_SPACE_RE.sub("", rest)
            items = []
            for part in rest.split(";")[1:]:
                key, eq, value = part.partition("=")
                items.append((key, value if eq else None))
            self._items = items
        return items

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of ``name``; ``""`` for a flag parameter (``;lr``), ``default`` if absent."""
        if self._items is None:
            match = _param_finder(name)(self._text or "")
            if match is None:
                return default
            return match.group(1) or ""
        lname = name.lower()
        for key, value in self._items:
            if key.lower() == lname:
                return "" if value is None else value
        return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def set(self, name: str, value: str | None) -> None:
        items = self._list()
        self._text = None
        lname = name.lower()
        for i, (key, _) in enumerate(items):
            if key.lower() == lname:
                items[i] = (key, value)
                return
        items.append((name, value))

    def remove(self, name: str) -> None:
        lname = name.lower()
        self._items = [(k, v) for k, v in self._list() if k.lower() != lname]
        self._text = None

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Params):
            return NotImplemented
        mine = {k.lower(): v for k, v in self._list()}
        return mine == {k.lower(): v for k, v in other._list()}

    def __str__(self) -> str:
        return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self._list())

    def __repr__(self) -> str:
        return f"Params({self._list()!r})"


@lru_cache(maxsize=256)
def _param_finder(name: str) -> Callable[[str], re.Match[str] | None]:
    """``search`` of a regex finding the first ``;name`` / ``;name=value`` in validated text."""
    pattern = rf";[ \t]*{re.escape(name)}[ \t]*(?:=[ \t]*([^; \t]*))?[ \t]*(?=;|$)"
    return re.compile(pattern, re.IGNORECASE).search


def _lazy_param(
    text: str, needle: str, search: Callable[[str], re.Match[str] | None]
) -> str | None:
    """One parameter from validated parameter text: a plain ``find`` for the usual
    lower-case ``;name=`` spelling, the case-insensitive regex otherwise."""
    at = text.find(needle)
    if at >= 0:
        start = at + len(needle)
        end = text.find(";", start)
        return (text[start:] if end < 0 else text[start:end]).rstrip(" \t")
    match = search(text)
    return None if match is None else match.group(1) or ""


_BRANCH_SEARCH = _param_finder("branch")
_TAG_SEARCH = _param_finder("tag")
# name-addr with simple (unquoted) parameters, in one match: the common From/To/Contact
_NAME_ADDR_FULL_RE = re.compile(
    rf"[ \t]*(?:({_QUOTED})|({_TOKEN}(?:[ \t]+{_TOKEN})*))?[ \t]*<[ \t]*([^<>\"\s]+)[ \t]*>"
    rf"({_SIMPLE_PARAMS_RE.pattern})"
)


def parse_params(text: str, pos: int) -> Params:
    """Parse ``*( SEMI generic-param )`` from ``text[pos:]``; the rest must be whitespace."""
    rest = text[pos:] if pos else text
    if not rest:
        return Params()
    if '"' not in rest:
        # fast path: one C-level validation, then a plain split when first read
        if not _SIMPLE_PARAMS_RE.fullmatch(rest):
            raise SIPSyntaxError(f"malformed parameters {rest[:40]!r}")
        return Params._lazy(rest)
    items: list[tuple[str, str | None]] = []
    pos = 0
    n = len(rest)
    while pos < n:
        match = _PARAM_RE.match(rest, pos)
        if match is None:
            if rest[pos:].strip(" \t"):
                raise SIPSyntaxError(f"malformed parameters {rest[pos : pos + 40]!r}")
            break
        items.append((match.group(1), match.group(2)))
        pos = match.end()
    return Params(items)


class Via:
    """One Via header value: ``SIP/2.0/UDP host:port;branch=...`` (§20.42)."""

    __slots__ = ("_params", "_ptext", "host", "port", "transport")

    def __init__(
        self, transport: str, host: str, port: int | None = None, params: Params | None = None
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self._params: Params | None = params if params is not None else Params()
        self._ptext = ""

    @property
    def params(self) -> Params:
        # parsed Vias keep their validated parameter text until someone needs the list
        if self._params is None:
            self._params = Params._lazy(self._ptext)
        return self._params

    @params.setter
    def params(self, value: Params) -> None:
        self._params = value

    @classmethod
    def parse(cls, text: str) -> Via:
        match = _VIA_FULL_RE.fullmatch(text)
        if match is not None:
            _, transport, host, port, params = match.groups()
            via = cls.__new__(cls)
            via.transport = transport.upper()
            via.host = host
            via.port = None
            if port is not None:
                via.port = int(port)
                if via.port > 65535:
                    raise SIPSyntaxError("Via port out of range")
            via._params = None
            via._ptext = params
            return via
        match = _VIA_RE.match(text)
        if match is None:
            raise SIPSyntaxError(f"malformed Via {text[:60]!r}")
        _, transport, host, port = match.groups()
        port_number = None
        if port is not None:
            port_number = int(port)
            if port_number > 65535:
                raise SIPSyntaxError("Via port out of range")
        return cls(transport.upper(), host, port_number, parse_params(text, match.end()))

    @property
    def branch(self) -> str | None:
        if self._params is None:  # the hot path of transaction matching
            return _lazy_param(self._ptext, ";branch=", _BRANCH_SEARCH)
        return self._params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host.lower(), self.port)

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def is_rfc3261_branch(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(BRANCH_MAGIC)

    def __str__(self) -> str:
        host = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {host}{self.params}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"


class Address:
    """A name-addr or addr-spec with header parameters: From, To, Contact, Route (§20.10).

    The URI is parsed on first access: matching a transaction needs only the tag.
    """

    __slots__ = ("_params", "_ptext", "_uri", "_uri_text", "display_name")

    def __init__(
        self, uri: URI | str, display_name: str | None = None, params: Params | None = None
    ) -> None:
        if isinstance(uri, str):
            self._uri: URI | None = None
            self._uri_text = uri
        else:
            self._uri = uri
            self._uri_text = ""
        self.display_name = display_name
        self._params: Params | None = params if params is not None else Params()
        self._ptext = ""

    @property
    def params(self) -> Params:
        if self._params is None:
            self._params = Params._lazy(self._ptext)
        return self._params

    @params.setter
    def params(self, value: Params) -> None:
        self._params = value

    @property
    def uri(self) -> URI:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self._uri_text)
        return uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value

    @classmethod
    def parse(cls, text: str) -> Address:
        match = _NAME_ADDR_FULL_RE.fullmatch(text)
        if match is not None:
            quoted, tokens, uri_text, params = match.groups()
            address = cls.__new__(cls)
            address._uri = None
            address._uri_text = uri_text
            address.display_name = unquote_string(quoted) if quoted is not None else tokens
            address._params = None
            address._ptext = params
            return address
        match = _NAME_ADDR_RE.match(text)
        if match is not None:
            quoted, tokens, uri_text = match.groups()
            display = unquote_string(quoted) if quoted is not None else tokens
            uri_text = uri_text.strip(" \t")
            if not uri_text:
                raise SIPSyntaxError("empty URI in name-addr")
            return cls(uri_text, display, parse_params(text, match.end()))
        text = text.strip(" \t")
        if text.startswith('"') or "<" in text:
            raise SIPSyntaxError(f"malformed name-addr {text[:60]!r}")
        # addr-spec without brackets: the parameters belong to the header, not the URI (§20)
        semi = text.find(";")
        uri_text = text if semi < 0 else text[:semi]
        if not uri_text or " " in uri_text.strip() or "?" in uri_text or "," in uri_text:
            raise SIPSyntaxError(f"malformed addr-spec {text[:60]!r}")
        return cls(parse_uri(uri_text.strip(" \t")), None, parse_params(text, len(uri_text)))

    @property
    def tag(self) -> str | None:
        if self._params is None:  # the hot path of dialog and transaction matching
            return _lazy_param(self._ptext, ";tag=", _TAG_SEARCH)
        return self._params.get("tag")

    def __str__(self) -> str:
        uri = self._uri_text if self._uri is None else str(self._uri)
        if self.display_name is not None:
            name = self.display_name
            if not _DISPLAY_TOKENS_RE.fullmatch(name):
                name = quote(name)
            return f"{name} <{uri}>{self.params}"
        return f"<{uri}>{self.params}"

    def __repr__(self) -> str:
        return f"Address({str(self)!r})"


class CSeq:
    """``CSeq: 4711 INVITE`` (§20.16); the number is below 2**31 (§8.1.1.5)."""

    __slots__ = ("method", "seq")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    @classmethod
    def parse(cls, text: str) -> CSeq:
        seq, _, method = text.partition(" ")
        if method in KNOWN_METHODS and seq.isdigit() and seq.isascii() and len(seq) <= 10:
            number = int(seq)  # the usual "4711 INVITE": no regex needed
            if number >= 2**31:
                raise SIPSyntaxError("CSeq number out of range")
            cseq = cls.__new__(cls)
            cseq.seq = number
            cseq.method = method
            return cseq
        match = _CSEQ_RE.fullmatch(text)
        if match is None:
            raise SIPSyntaxError(f"malformed CSeq {text[:40]!r}")
        value = int(match.group(1))
        if value >= 2**31:
            raise SIPSyntaxError("CSeq number out of range")
        return cls(value, match.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"

    def __repr__(self) -> str:
        return f"CSeq({self.seq}, {self.method!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return (self.seq, self.method) == (other.seq, other.method)

    def __hash__(self) -> int:
        return hash((self.seq, self.method))


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.fullmatch(text))


def as_sip_uri(uri: URI) -> SipURI:
    if not isinstance(uri, SipURI):
        raise SIPSyntaxError(f"not a SIP URI: {uri}")
    return uri
