"""SIP and SIPS URIs (RFC 3261 §19.1, §25.1) with IPv6 references (RFC 5118).

Components are kept exactly as written (escaped), so a parsed URI serialises back to the same
text; comparison follows §19.1.4 and works on the unescaped, case-folded forms.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote

from cloudphone.sip.errors import SIPSyntaxError

__all__ = ["URI", "AbsoluteURI", "SipURI", "parse_uri"]

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+"
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*"
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})"
_HCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})"
_HOSTNAME = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?"
)
_IPV6REF = r"\[[0-9A-Fa-f:.]+\]"

_SIP_URI_RE = re.compile(
    rf"(?P<scheme>sips?):"
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"(?P<host>{_IPV6REF}|{_HOSTNAME})"
    r"(?::(?P<port>[0-9]{1,5}))?"
    rf"(?P<params>(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*)"
    rf"(?:\?(?P<headers>{_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?",
    re.IGNORECASE,
)
# absoluteURI = scheme ":" ( hier-part / opaque-part ) — tel:, urn:, http: ... (§25.1)
_ABS_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[A-Za-z0-9\-_.!~*'()%;?:@&=+$,/\[\]]+")
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")

# uri-parameters that never match when present in only one of the URIs (§19.1.4: user,
# ttl, method, maddr; transport because omitted defaults never match explicit ones).
_STRICT_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


def _norm_host(host: str) -> str:
    """Canonical host for comparison: RFC 5118 §4 says IPv6 references compare as addresses."""
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host.lower()
    return host.lower().rstrip(".")


class SipURI:
    """A ``sip:`` or ``sips:`` URI. Components are stored escaped, as on the wire.

    Treat instances as immutable (``parse_uri`` caches and shares them): derive changed
    copies with :meth:`replace`, :meth:`with_params` and :meth:`without_params`.
    """

    __slots__ = ("headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        host: str,
        *,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: tuple[tuple[str, str | None], ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params
        self.headers = headers

    def param(self, name: str) -> str | None:
        """Value of a uri-parameter; ``""`` for a parameter without value, None if absent."""
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

    def with_params(self, **changes: str | None) -> SipURI:
        """Copy with parameters set (value None = flag parameter such as ``;lr``)."""
        lowered = {k.lower(): (k, v) for k, v in changes.items()}
        kept = tuple((k, v) for k, v in self.params if k.lower() not in lowered)
        return self.replace(params=kept + tuple(lowered.values()))

    def without_params(self, *names: str) -> SipURI:
        drop = {n.lower() for n in names}
        return self.replace(params=tuple((k, v) for k, v in self.params if k.lower() not in drop))

    def replace(self, **changes: object) -> SipURI:
        fields: dict[str, object] = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        host = fields.pop("host")
        return SipURI(str(host), **fields)  # type: ignore[arg-type]

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def is_loose_router(self) -> bool:
        """A Route/Record-Route URI with ``;lr`` belongs to a loose router (§16.12.1.1)."""
        return self.has_param("lr")

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += (":", self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += (":", str(self.port))
        for key, value in self.params:
            parts += (";", key) if value is None else (";", key, "=", value)
        if self.headers:
            parts += ("?", "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(parts)

    def __repr__(self) -> str:
        return f"SipURI({str(self)!r})"

    def _key(self) -> tuple[object, ...]:
        return (
            self.scheme.lower(),
            None if self.user is None else unquote(self.user),
            None if self.password is None else unquote(self.password),
            _norm_host(self.host),
            self.port,
        )

    def __eq__(self, other: object) -> bool:
        """URI equivalence of RFC 3261 §19.1.4."""
        if not isinstance(other, SipURI):
            return NotImplemented
        if self._key() != other._key():
            return False
        mine = {k.lower(): unquote(v or "").lower() for k, v in self.params}
        theirs = {k.lower(): unquote(v or "").lower() for k, v in other.params}
        for name in mine.keys() | theirs.keys():
            if name in mine and name in theirs:
                if mine[name] != theirs[name]:
                    return False
            elif name in _STRICT_PARAMS:
                return False
        # Header components must all be present in both and match (§19.1.4).
        mine_h = {k.lower(): unquote(v) for k, v in self.headers}
        theirs_h = {k.lower(): unquote(v) for k, v in other.headers}
        return mine_h == theirs_h

    def __hash__(self) -> int:
        return hash(self._key())


class AbsoluteURI:
    """Any other URI scheme (``tel:``, ``urn:``, ``http:``); compared as case-folded text."""

    __slots__ = ("scheme", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.scheme = text.split(":", 1)[0].lower()

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"AbsoluteURI({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return unquote(self.text).lower() == unquote(other.text).lower()

    def __hash__(self) -> int:
        return hash(unquote(self.text).lower())


URI = SipURI | AbsoluteURI


def _split_params(text: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        key, eq, value = item.partition("=")
        out.append((key, value if eq else None))
    return tuple(out)


@lru_cache(maxsize=4096)
def parse_uri(text: str) -> URI:
    """Parse a Request-URI or name-addr URI; raise :class:`SIPSyntaxError` if malformed.

    Cached: the same URIs (the registrar's, a peer's Contact) recur in every message.
    """
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        if text[:4].lower() in ("sip:", "sips") or not _ABS_URI_RE.fullmatch(text):
            raise SIPSyntaxError(f"malformed URI {text[:80]!r}")
        return AbsoluteURI(text)
    scheme, user, password, host, port, params, headers = match.groups()
    if host[0] == "[":
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SIPSyntaxError(f"malformed IPv6 reference {host!r}") from None
    elif host[0].isdigit() and _IPV4_RE.fullmatch(host):
        if any(int(octet) > 255 for octet in host.split(".")):
            raise SIPSyntaxError(f"malformed IPv4 address {host!r}")
    port_number: int | None = None
    if port is not None:
        port_number = int(port)
        if port_number > 65535:
            raise SIPSyntaxError(f"port out of range in {text[:80]!r}")
    return SipURI(
        host,
        scheme=scheme,
        user=user,
        password=password,
        port=port_number,
        params=_split_params(params) if params else (),
        headers=tuple((k, v) for k, _, v in (h.partition("=") for h in headers.split("&")))
        if headers
        else (),
    )
