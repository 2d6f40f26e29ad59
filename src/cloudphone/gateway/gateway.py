"""The running push gateway: the instance service, the upstream registration engine, and the
background sweep that ends expired instances and sends expiry warnings."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from cloudphone.core.logging import get_logger
from cloudphone.gateway.service import PushInstanceService
from cloudphone.gateway.upstream import Upstream

if TYPE_CHECKING:
    from cloudphone.core.settings import GatewaySettings
    from cloudphone.gateway.calls import CallRelay

log = get_logger(__name__)


class Gateway:
    def __init__(
        self,
        instances: PushInstanceService,
        upstream: Upstream,
        *,
        sweep_interval_s: float = 30.0,
        startup_rate: float = 500.0,
        calls: CallRelay | None = None,
        settings: GatewaySettings | None = None,
    ) -> None:
        self.calls = calls  # the app-facing SIP edge and the call relay (issue 6)
        self._settings = settings
        self.instances = instances
        self.upstream = upstream
        self._sweep_interval = sweep_interval_s
        self._startup_rate = startup_rate
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Resume every live instance (at a bounded rate: no registration storm after a
        restart), then sweep periodically."""
        if self.calls is not None and self._settings is not None:
            try:
                await self.calls.start(self._settings)
            except OSError as exc:
                # Registrations upstream still work without the app-facing edge; say so loudly.
                log.error("the gateway's SIP edge could not listen", error=str(exc))
        self._tasks.append(asyncio.create_task(self._resume(), name="gateway-resume"))
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="gateway-sweep"))

    async def _resume(self) -> None:
        targets = await self.instances.live_targets()
        interval = 1.0 / self._startup_rate
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index, target in enumerate(targets):
            delay = started + index * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.upstream.register(target)
        log.info("push instances resumed", count=len(targets))

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.instances.sweep()
            except Exception:
                log.exception("push instance sweep failed")
            await asyncio.sleep(self._sweep_interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.calls is not None:
            await self.calls.close()
        await self.upstream.close()
