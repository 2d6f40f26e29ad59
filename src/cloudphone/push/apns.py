"""Apple Push Notification service over HTTP/2 (token or certificate provider auth).

Written on ``h2`` + asyncio rather than aioapns: aioapns hard-codes Apple's hosts and port as
class attributes (no local or custom endpoint without patching the library), never refreshes
its provider token on ``403 ExpiredProviderToken``, does not expose response headers (no
``retry-after``), does not turn the 410 ``timestamp`` into a decision, and validates and
writes every request separately, which costs throughput (see ``benchmarks/push_apns.py``).
Reference: Apple, "Sending notification requests to APNs" and "Handling notification
responses from APNs".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import ssl
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import jwt
import structlog
from hpack import NeverIndexedHeaderTuple

from cloudphone.core.clock import Clock, SystemClock
from cloudphone.push.config import ApnsCertificateAuth, ApnsConfig, ApnsTokenAuth
from cloudphone.push.destinations import AllowedDestinations
from cloudphone.push.notifications import (
    Delivery,
    IncomingCall,
    Notification,
    collapse_key,
    delivery_of,
    kind_of,
)
from cloudphone.push.outcomes import (
    Delivered,
    Outcome,
    Rejected,
    Retry,
    TokenDead,
    parse_retry_after,
)
from cloudphone.push.service import PushToken

log = structlog.get_logger(__name__)

# Payload limits: 5 KB for VoIP pushes, 4 KB for everything else.
VOIP_PAYLOAD_LIMIT = 5120
PAYLOAD_LIMIT = 4096
# Reasons that mean "never use this token again".
_DEAD_TOKEN_REASONS = frozenset(
    {"BadDeviceToken", "DeviceTokenNotForTopic", "TopicDisallowed", "Unregistered", "ExpiredToken"}
)
_RETRY_STATUSES = frozenset({429, 500, 503})
_DEFAULT_RETRY_AFTER = 1.0
# Requests per socket write in a burst: one write per push costs syscalls and TLS records,
# one write per burst leaves APNs idle while we build it.
_FLUSH_EVERY = 16
_ALERT_EXPIRY = dt.timedelta(days=1)
_TOKEN_SHAPE = re.compile(r"[0-9a-fA-F]{16,200}")

_CLIENT_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # Every header value we send is built here from validated parts (the device token is
    # checked against _TOKEN_SHAPE), so h2's per-request validation would only cost time.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
)


class _PlainLiteralEncoder(hpack.Encoder):
    """HPACK without Huffman coding of literals (RFC 7541 §5.2 makes it optional).

    Pure-Python Huffman coding costs more CPU than the ~25 bytes it saves on a device path;
    repeated headers (topic, authorization) are table-indexed either way.
    """

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        return super().encode(headers, huffman=False)


class ProviderToken:
    """The ES256 JWT APNs wants as provider token, reused between refreshes.

    Apple rejects tokens older than an hour and throttles refreshes more often than every
    20 minutes (``TooManyProviderTokenUpdates``), so one token is shared by every request of
    the team and regenerated after ``refresh_after_s``.
    """

    def __init__(self, auth: ApnsTokenAuth, clock: Clock | None = None) -> None:
        self._auth = auth
        self._key = Path(auth.key_path).read_text()
        self._clock = clock or SystemClock()
        self._header = b""
        self._issued_at = 0.0

    @property
    def issued_at(self) -> float:
        return self._issued_at

    def header(self) -> bytes:
        age = self._clock.now().timestamp() - self._issued_at
        if not self._header or age >= self._auth.refresh_after_s:
            self._mint()
        return self._header

    def refresh(self, stale: bytes) -> bytes:
        """A fresh token after APNs called ``stale`` expired; many concurrent 403s mint one."""
        if self._header == stale:
            self._mint()
        return self._header

    def _mint(self) -> None:
        now = self._clock.now().timestamp()
        token = jwt.encode(
            {"iss": self._auth.team_id, "iat": int(now)},
            self._key,
            algorithm="ES256",
            headers={"kid": self._auth.key_id},
        )
        self._header = b"bearer " + token.encode()
        self._issued_at = now
        log.info("apns provider token minted", team_id=self._auth.team_id)


class _ConnectionGone(ConnectionError):
    """The connection ended before the answer came."""

    def __init__(self, unprocessed: bool) -> None:
        super().__init__("apns connection closed")
        # True when APNs said (GOAWAY last_stream_id) it never looked at the request.
        self.unprocessed = unprocessed


@dataclass(slots=True)
class _Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


@dataclass(slots=True)
class _Stream:
    future: asyncio.Future[_Answer]
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One multiplexed HTTP/2 connection to APNs."""

    def __init__(self, authority: bytes, idle_timeout: float) -> None:
        self._authority = authority
        self._idle_timeout = idle_timeout
        self._conn = h2.connection.H2Connection(config=_CLIENT_CONFIG)
        self._conn.encoder = _PlainLiteralEncoder()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._streams: dict[int, _Stream] = {}
        self._flush_scheduled = False
        self._unflushed = 0
        self._window_waiters: deque[asyncio.Future[None]] = deque()
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._last_activity = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self.going_away = False
        self.closed = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._conn.initiate_connection()
        self._flush()
        self._idle_timer = self._loop.call_later(self._idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        for stream in self._streams.values():
            if not stream.future.done():
                stream.future.set_exception(_ConnectionGone(unprocessed=False))
        self._streams.clear()
        self._wake_all()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            log.warning("apns protocol error; closing connection")
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.headers = dict(event.headers or ())
                    stream.status = int(stream.headers.get(b":status", b"0"))
            elif isinstance(event, h2.events.DataReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.body.extend(event.data or b"")
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._finish(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._fail(event.stream_id, _ConnectionGone(unprocessed=False))
            elif isinstance(event, h2.events.WindowUpdated):
                self._wake(self._window_waiters, everyone=True)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._wake(self._slot_waiters, everyone=True)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._go_away(event.last_stream_id)
        self._last_activity = self._loop.time()
        self._schedule_flush()

    # requests

    @property
    def usable(self) -> bool:
        return not (self.closed or self.going_away)

    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Answer:
        conn = self._conn
        # Our own stream count: h2's open_outbound_streams walks every stream on each call.
        while len(self._streams) >= conn.remote_settings.max_concurrent_streams and self.usable:
            await self._wait(self._slot_waiters)
        if not self.usable:
            raise _ConnectionGone(unprocessed=True)
        try:
            stream_id = conn.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.going_away = True  # exhausted stream ids: drain and reconnect
            raise _ConnectionGone(unprocessed=True) from None
        stream = _Stream(self._loop.create_future())
        self._streams[stream_id] = stream
        try:
            conn.send_headers(
                stream_id,
                [
                    (b":method", b"POST"),
                    (b":scheme", b"https"),
                    (b":authority", self._authority),
                    *headers,
                ],
            )
            await self._send_body(stream_id, body)
        except h2.exceptions.ProtocolError:
            self._streams.pop(stream_id, None)
            raise _ConnectionGone(unprocessed=True) from None
        self._unflushed += 1
        if self._unflushed >= _FLUSH_EVERY:
            self._flush()  # keep APNs busy while we build the rest of a burst
        else:
            self._schedule_flush()
        self._last_activity = self._loop.time()
        try:
            return await stream.future
        except asyncio.CancelledError:
            # Timed out by the caller: tell APNs we no longer care about the stream.
            if self._streams.pop(stream_id, None) is not None and not self.closed:
                try:
                    conn.reset_stream(stream_id)
                    self._schedule_flush()
                except h2.exceptions.ProtocolError:
                    pass
            raise

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = self._conn.local_flow_control_window(stream_id)
            if window <= 0:
                self._flush()
                await self._wait(self._window_waiters)
                if self.closed:
                    raise _ConnectionGone(unprocessed=True)
                continue
            size = min(window, self._conn.max_outbound_frame_size, len(view))
            self._conn.send_data(stream_id, bytes(view[:size]), end_stream=size == len(view))
            view = view[size:]

    def _finish(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and not stream.future.done():
            stream.future.set_result(_Answer(stream.status, stream.headers, bytes(stream.body)))
        self._wake(self._slot_waiters)
        if self.going_away and not self._streams:
            self.close()

    def _fail(self, stream_id: int, exc: Exception) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and not stream.future.done():
            stream.future.set_exception(exc)
        self._wake(self._slot_waiters)

    def _go_away(self, last_stream_id: int | None) -> None:
        """RFC 9113 §6.8: streams above ``last_stream_id`` were not processed, resend them."""
        self.going_away = True
        log.info("apns connection going away", last_stream_id=last_stream_id)
        for stream_id in [s for s in self._streams if s > (last_stream_id or 0)]:
            self._fail(stream_id, _ConnectionGone(unprocessed=True))
        self._wake_all()
        if not self._streams:
            self.close()

    # plumbing

    async def _wait(self, waiters: deque[asyncio.Future[None]]) -> None:
        waiter = self._loop.create_future()
        waiters.append(waiter)
        await waiter

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]], *, everyone: bool = False) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    def _wake_all(self) -> None:
        self._wake(self._window_waiters, everyone=True)
        self._wake(self._slot_waiters, everyone=True)

    def _schedule_flush(self) -> None:
        # Requests issued in one loop iteration leave together (up to _FLUSH_EVERY per write).
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._unflushed = 0
        data = self._conn.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _check_idle(self) -> None:
        idle_for = self._loop.time() - self._last_activity
        if not self._streams and idle_for >= self._idle_timeout:
            log.info("apns connection idle; closing", idle_s=round(idle_for, 1))
            self.close()
        elif not self.closed:
            delay = max(self._idle_timeout - idle_for, 0.05)
            self._idle_timer = self._loop.call_later(delay, self._check_idle)

    def close(self) -> None:
        if self.closed:
            return
        self.going_away = True
        try:
            self._conn.close_connection()
            self._flush()
        except h2.exceptions.ProtocolError:
            pass
        if self._transport is not None:
            self._transport.close()
        self.closed = True


class ApnsConnection:
    """The single HTTP/2 connection to APNs for one team (or certificate) and environment.

    Opened lazily, replaced after GOAWAY or loss, closed when idle. Shared by every app of
    the team: the topic travels per request.
    """

    def __init__(
        self,
        url: str,
        allowed: AllowedDestinations,
        *,
        ssl_context: ssl.SSLContext,
        idle_timeout: float,
    ) -> None:
        allowed.check(url)  # P2: refuse before any socket exists
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or 443
        self._authority = parts.netloc.encode()
        self._ssl = ssl_context
        self._idle_timeout = idle_timeout
        self._current: _Connection | None = None
        self._lock = asyncio.Lock()
        self.connects = 0

    async def _connection(self) -> _Connection:
        current = self._current
        if current is not None and current.usable:
            return current
        async with self._lock:
            current = self._current
            if current is not None and current.usable:
                return current
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_connection(
                lambda: _Connection(self._authority, self._idle_timeout),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host,
            )
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
                transport.close()
                raise ConnectionError("APNs endpoint did not negotiate HTTP/2")
            self.connects += 1
            self._current = protocol
            log.info("apns connected", host=self._host, port=self._port)
            return protocol

    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Answer:
        """Send one request; a request APNs provably never processed is resent once."""
        for attempt in (1, 2):
            connection = await self._connection()
            try:
                return await connection.request(headers, body)
            except _ConnectionGone as gone:
                if not gone.unprocessed or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def reset(self) -> None:
        """Abandon the current connection; the next request opens a new one."""
        if self._current is not None:
            log.info("apns connection reset", host=self._host, port=self._port)
            self._current.close()
            self._current = None

    async def aclose(self) -> None:
        self.reset()


def ssl_context_for(config: ApnsConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.ca_file is not None:
        context.load_verify_locations(cafile=str(config.ca_file))
    if isinstance(config.auth, ApnsCertificateAuth):
        key = str(config.auth.key_path) if config.auth.key_path else None
        context.load_cert_chain(str(config.auth.cert_path), key)
    context.set_alpn_protocols(["h2"])
    return context


def connection_key(config: ApnsConfig) -> tuple[str, str]:
    """Apps that share this key share one connection (same team/certificate, same host)."""
    if isinstance(config.auth, ApnsTokenAuth):
        return (config.url, f"team:{config.auth.team_id}:{config.auth.key_id}")
    return (config.url, f"cert:{config.auth.cert_path}")


class ApnsService:
    """Pushes to the iOS devices of one app."""

    name = "apns"

    def __init__(
        self,
        config: ApnsConfig,
        connection: ApnsConnection,
        provider_token: ProviderToken | None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._connection = connection
        self._provider_token = provider_token
        self._clock = clock or SystemClock()
        self.max_concurrency = config.max_concurrency
        self._topic = config.bundle_id.encode()
        self._voip_topic = f"{config.bundle_id}.voip".encode()

    def _headers(self, notification: Notification) -> list[tuple[bytes, bytes]]:
        delivery = delivery_of(notification)
        now = self._clock.now()
        if delivery is Delivery.VOIP:
            assert isinstance(notification, IncomingCall)
            topic, push_type, priority = self._voip_topic, b"voip", b"10"
            expiration = int(notification.ring_until.timestamp())
        elif delivery is Delivery.ALERT:
            topic, push_type, priority = self._topic, b"alert", b"10"
            expiration = int((now + _ALERT_EXPIRY).timestamp())
        else:
            # Apple requires priority 5 for background pushes; a stale wake-up is useless.
            topic, push_type, priority = self._topic, b"background", b"5"
            expiration = 0
        headers = [
            (b"apns-topic", topic),
            (b"apns-push-type", push_type),
            (b"apns-priority", priority),
            (b"apns-expiration", str(expiration).encode()),
        ]
        collapse = collapse_key(notification)
        if collapse is not None:
            headers.append((b"apns-collapse-id", collapse.encode()))
        return headers

    @staticmethod
    def _payload(notification: Notification) -> bytes:
        data = notification.payload()
        delivery = delivery_of(notification)
        if delivery is Delivery.ALERT:
            # The app localises the text (white-label); the loc-key names the kind.
            aps: dict[str, object] = {
                "alert": {"loc-key": f"push.{data['type']}"},
                "sound": "default",
                "mutable-content": 1,
            }
        elif delivery is Delivery.BACKGROUND:
            aps = {"content-available": 1}
        else:
            aps = {}
        return json.dumps({"aps": aps, **data}, separators=(",", ":")).encode()

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        if not _TOKEN_SHAPE.fullmatch(token.value):
            return TokenDead("BadDeviceToken", self._clock.now())
        headers = self._headers(notification)
        body = self._payload(notification)
        limit = VOIP_PAYLOAD_LIMIT if delivery_of(notification) is Delivery.VOIP else PAYLOAD_LIMIT
        if len(body) > limit:
            return Rejected("PayloadTooLarge")
        # Never indexed: each token's path is used once, so it would only churn the HPACK table.
        headers.insert(0, NeverIndexedHeaderTuple(b":path", b"/3/device/" + token.value.encode()))
        loop = asyncio.get_running_loop()
        started = loop.time()
        auth = self._provider_token.header() if self._provider_token else None
        answer = await self._post(headers, body, auth)
        if (
            answer.status == 403
            and self._provider_token is not None
            and auth is not None
            and _reason(answer) == "ExpiredProviderToken"
        ):
            answer = await self._post(headers, body, self._provider_token.refresh(auth))
        return self._outcome(answer, loop.time() - started, notification)

    async def _post(
        self, headers: list[tuple[bytes, bytes]], body: bytes, auth: bytes | None
    ) -> _Answer:
        if auth is not None:
            headers = [*headers, (b"authorization", auth)]
        try:
            # asyncio.timeout rather than wait_for: no extra task per push.
            async with asyncio.timeout(self._config.request_timeout_s):
                return await self._connection.request(headers, body)
        except TimeoutError:
            # No answer in time usually means a silently dead connection (NAT expiry,
            # half-open TCP): the next push must not wait on it too.
            self._connection.reset()
            raise

    def _outcome(self, answer: _Answer, latency: float, notification: Notification) -> Outcome:
        if answer.status == 200:
            apns_id = answer.headers.get(b"apns-id")
            return Delivered(latency, apns_id.decode() if apns_id else None)
        reason = _reason(answer)
        if reason in _DEAD_TOKEN_REASONS:
            return TokenDead(reason, _timestamp(answer) or self._clock.now())
        if answer.status in _RETRY_STATUSES:
            return Retry(_retry_after(answer), reason or str(answer.status))
        log.warning(
            "apns rejected push", status=answer.status, reason=reason, kind=kind_of(notification)
        )
        return Rejected(reason or f"HTTP {answer.status}")

    async def aclose(self) -> None:
        """The shared connection is closed by its owner (the dispatcher)."""


def _reason(answer: _Answer) -> str:
    try:
        return str(json.loads(answer.body).get("reason", ""))
    except (ValueError, AttributeError):
        return ""


def _timestamp(answer: _Answer) -> dt.datetime | None:
    """The 410 body's ``timestamp``: milliseconds since the epoch."""
    try:
        millis = json.loads(answer.body)["timestamp"]
        return dt.datetime.fromtimestamp(int(millis) / 1000, dt.UTC)
    except (ValueError, KeyError, TypeError):
        return None


def _retry_after(answer: _Answer) -> float:
    value = answer.headers.get(b"retry-after")
    return parse_retry_after(value.decode() if value else None, _DEFAULT_RETRY_AFTER)
