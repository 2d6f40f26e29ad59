"""asyncio driver of the sans-IO :class:`RegistrationClient`: sends its REGISTERs through the
endpoint, feeds back the responses, and runs refreshes and retries on the endpoint's timer
heap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from cloudphone.sip.message import Request
from cloudphone.sip.registration import (
    Registered,
    RegistrationClient,
    RegistrationEvent,
    RegistrationFailed,
    Unregistered,
)
from cloudphone.sipnet.endpoint import Endpoint, TransactionFailed
from cloudphone.sipnet.resolver import Target
from cloudphone.sipnet.scheduler import TimerEntry
from cloudphone.sipnet.transport import Flow, StreamFlow

__all__ = ["RegistrationRunner"]

log = structlog.get_logger(__name__)


class RegistrationRunner:
    """Keeps one registration alive; every outcome is put on :attr:`events`."""

    def __init__(
        self,
        endpoint: Endpoint,
        client: RegistrationClient,
        *,
        target: Target | None = None,
        on_event: Callable[[RegistrationEvent], None] | None = None,
        keep_alive: float | None = None,
    ) -> None:
        """``keep_alive`` (seconds): ping the registration's TCP/TLS flow (RFC 5626 §4.4.1)
        and register again at once over a new connection when the flow is lost."""
        self.endpoint = endpoint
        self.client = client
        self.target = target
        self.on_event = on_event
        self.events: asyncio.Queue[RegistrationEvent] = asyncio.Queue()
        self._timer: TimerEntry | None = None
        self._task: asyncio.Task[RegistrationEvent] | None = None
        self._lock = asyncio.Lock()
        self.keep_alive = keep_alive
        self._watched: Flow | None = None
        self._stopping = False

    async def start(self) -> RegistrationEvent:
        """Register and return the first outcome (Registered or RegistrationFailed)."""
        self._stopping = False
        return await self._exchange(self.client.register(self.endpoint.now()))

    async def stop(self, *, unregister: bool = True) -> RegistrationEvent | None:
        """Cancel refreshes and, by default, remove the binding (Expires: 0)."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if not unregister:
            return None
        return await self._exchange(self.client.unregister(self.endpoint.now()))

    async def _exchange(self, request: Request | None) -> RegistrationEvent:
        async with self._lock:
            events: list[RegistrationEvent] = []
            while request is not None:
                try:
                    response = await self.endpoint.request(request, self.target)
                except TransactionFailed as failure:
                    now = self.endpoint.now()
                    events = self.client.transaction_failed(now, timeout=failure.timeout)
                    break
                request, events = self.client.receive_response(response, self.endpoint.now())
            for event in events:
                self._publish(event)
            if events and isinstance(events[-1], Registered):
                self._watch_flow()
            self._schedule()
            return events[-1] if events else RegistrationFailed(500, "no outcome", None)

    def _publish(self, event: RegistrationEvent) -> None:
        if isinstance(event, Registered):
            log.info("sip.registered", aor=str(self.client.config.aor), expires=event.expires)
        elif isinstance(event, RegistrationFailed):
            log.info("sip.registration.failed", status=event.status_code, retry_at=event.retry_at)
        elif isinstance(event, Unregistered):
            log.info("sip.unregistered", aor=str(self.client.config.aor))
        self.events.put_nowait(event)
        if self.on_event is not None:
            self.on_event(event)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.client.next_deadline
        if deadline is not None:
            self._timer = self.endpoint.scheduler.call_at(deadline, self._due)

    def _watch_flow(self) -> None:
        """After a registration over TCP/TLS: keep its flow alive and notice when it dies."""
        if self.keep_alive is None or self.target is None or self.target.transport == "UDP":
            return
        key = (self.target.transport, self.target.host, self.target.port)
        flow = self.endpoint.flows.get(key)
        if not isinstance(flow, StreamFlow) or flow is self._watched:
            return
        self._watched = flow
        self.endpoint.keep_alive(flow, self.keep_alive, min(10.0, self.keep_alive / 2))
        flow.on_close.append(self._flow_lost)

    def _flow_lost(self) -> None:
        self._watched = None
        if self._stopping:
            return
        log.info("sip.registration.flow_lost", aor=str(self.client.config.aor))
        request = self.client.register(self.endpoint.now())
        self._task = asyncio.get_running_loop().create_task(self._exchange(request))

    def _due(self, now: float) -> None:
        self._timer = None
        request = self.client.on_timer(now)
        if request is not None:
            self._task = asyncio.get_running_loop().create_task(self._exchange(request))
