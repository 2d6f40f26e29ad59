"""Gateway fixtures: the instance lifecycle runs against an upstream that records what it was
asked to do. The real registration engine is exercised against Kamailio in test_engine.py."""

from __future__ import annotations

import pytest

from cloudphone.gateway.upstream import RegistrationTarget


class RecordingUpstream:
    """Remembers registrations in order; ``wiped`` proves the in-memory credentials were
    overwritten when the instance ended."""

    def __init__(self) -> None:
        self.live: dict[str, RegistrationTarget] = {}
        self.calls: list[tuple[str, str]] = []
        self.wiped: list[RegistrationTarget] = []

    async def register(self, target: RegistrationTarget) -> None:
        self.calls.append(("register", target.instance_id))
        self.live[target.instance_id] = target

    async def unregister(self, instance_id: str) -> None:
        self.calls.append(("unregister", instance_id))
        target = self.live.pop(instance_id, None)
        if target is not None:
            target.wipe()
            self.wiped.append(target)

    async def close(self) -> None:
        for target in self.live.values():
            target.wipe()
        self.live.clear()


@pytest.fixture
def upstream() -> RecordingUpstream:
    return RecordingUpstream()
