"""Development senders: ``log`` (the default for ``make run``) and ``webhook``.

They accept exactly the same notifications as the real services and answer with the same
outcomes, so the gateway behaves identically in development.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from cloudphone.core.clock import Clock, SystemClock
from cloudphone.push.destinations import AllowedDestinations, guarded_client
from cloudphone.push.notifications import Notification, delivery_of, kind_of
from cloudphone.push.outcomes import (
    Delivered,
    Outcome,
    Rejected,
    Retry,
    TokenDead,
    parse_retry_after,
    token_fingerprint,
)
from cloudphone.push.service import PushToken

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedPush:
    """A push the ``log`` sender kept; the token only as a fingerprint."""

    app_id: str
    device: str
    kind: str
    delivery: str
    payload: dict[str, Any]
    sent_at: dt.datetime


class LogSender:
    """Writes every push to the log and keeps the last ``keep_last`` in memory."""

    name = "log"
    max_concurrency = 10_000

    def __init__(self, app_id: str, keep_last: int = 100, clock: Clock | None = None) -> None:
        self._app_id = app_id
        self._clock = clock or SystemClock()
        self._pushes: deque[LoggedPush] = deque(maxlen=keep_last)

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        pushed = LoggedPush(
            app_id=self._app_id,
            device=token_fingerprint(token.value),
            kind=kind_of(notification),
            delivery=delivery_of(notification).value,
            payload=notification.payload(),
            sent_at=self._clock.now(),
        )
        self._pushes.append(pushed)
        log.info(
            "push (log sender)",
            app_id=self._app_id,
            device=pushed.device,
            kind=pushed.kind,
            delivery=pushed.delivery,
        )
        return Delivered(0.0, None)

    def recent(self) -> list[LoggedPush]:
        return list(self._pushes)

    async def aclose(self) -> None:
        pass


class WebhookSender:
    """POSTs each push as JSON to the configured URL (a test harness or a bridge).

    The receiver answers like a push service: 2xx delivered, 404/410 token dead, 429/5xx
    retry (``Retry-After`` honoured), anything else rejected.
    """

    name = "webhook"

    def __init__(
        self,
        app_id: str,
        url: str,
        allowed: AllowedDestinations,
        verify: ssl.SSLContext | bool,
        platform: str,
        *,
        max_concurrency: int = 100,
        clock: Clock | None = None,
    ) -> None:
        allowed.check(url)
        self._clock = clock or SystemClock()
        self._app_id = app_id
        self._url = url
        self._platform = platform
        self.max_concurrency = max_concurrency
        self._client = guarded_client(allowed, verify=verify, max_connections=max_concurrency)

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        body = {
            "app_id": self._app_id,
            "platform": self._platform,
            # The receiver is the operator's own tool; it needs the real token to correlate.
            "token": token.value,
            "kind": kind_of(notification),
            "delivery": delivery_of(notification).value,
            "payload": notification.payload(),
        }
        started = time.monotonic()
        response = await self._client.post(self._url, json=body)
        latency = time.monotonic() - started
        status = response.status_code
        if 200 <= status < 300:
            return Delivered(latency, None)
        if status in (404, 410):
            return TokenDead(f"HTTP {status}", self._clock.now())
        if status == 429 or status >= 500:
            return Retry(parse_retry_after(response.headers.get("retry-after")), f"HTTP {status}")
        return Rejected(f"HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()
