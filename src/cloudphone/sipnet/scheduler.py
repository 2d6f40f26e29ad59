"""One timer heap for the whole endpoint: the pure state machines report deadlines, this
turns the earliest one into a single ``loop.call_at``."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["Scheduler", "TimerEntry"]


class TimerEntry:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[float], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """Deadlines on the event loop's monotonic clock (``loop.time()``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._counter = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None

    def now(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[float], None]) -> TimerEntry:
        """Run ``callback(now)`` at ``when``; returns an entry that can be cancelled."""
        entry = TimerEntry(when, callback)
        heapq.heappush(self._heap, (when, next(self._counter), entry))
        self._rearm()
        return entry

    def __len__(self) -> int:
        return sum(1 for _, _, e in self._heap if not e.cancelled)

    def _rearm(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            if self._handle is not None:
                self._handle.cancel()
            self._handle, self._armed_for = None, None
            return
        first = self._heap[0][0]
        if self._armed_for is not None and self._armed_for <= first and self._handle:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_for = first
        self._handle = self.loop.call_at(first, self._run)

    def _run(self) -> None:
        self._handle, self._armed_for = None, None
        now = self.loop.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, entry = heapq.heappop(self._heap)
            if not entry.cancelled:
                entry.callback(now)
        self._rearm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap.clear()
        self._handle, self._armed_for = None, None
