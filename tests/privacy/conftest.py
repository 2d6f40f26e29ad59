"""Privacy fixtures: a recording upstream (so push instances can exist), a local SMTP server
(aiosmtpd) standing in for the operator's relay, and a subject with data in every table."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from cloudphone.gateway.messages import MessageStore
from cloudphone.privacy.config import PrivacyConfig
from cloudphone.privacy.notices import NoticeMailer
from cloudphone.runtime import Runtime
from tests.accounts.helpers import World, global_operator, make_world
from tests.gateway.conftest import RecordingUpstream
from tests.gateway.test_instances import hand_over


@pytest.fixture
def upstream() -> RecordingUpstream:
    return RecordingUpstream()


class Inbox:
    """What the operator's SMTP relay received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if m["To"] == address]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[Inbox]:
    inbox = Inbox(_free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def mailing_runtime(runtime: Runtime, smtp: Inbox) -> Runtime:
    """The runtime with the operator's SMTP relay pointed at the local server."""
    config = PrivacyConfig(smtp_host="127.0.0.1", smtp_port=smtp.port)
    runtime.privacy.mailer = runtime.privacy.notices.mailer = NoticeMailer(config)
    return runtime


@dataclass
class Subject:
    """A user with personal data in every table the data map knows."""

    world: World
    root: dict[str, str]
    aor: str
    name: str
    email: str
    heir: str
    call_token: str
    notice_token: str
    sip_user: str
    sip_password: str

    def identifiers(self) -> list[str]:
        return [
            self.aor,
            self.aor.split(":")[1].split("@")[0],
            self.name,
            self.email,
            self.heir,
            self.call_token,
            self.notice_token,
            self.sip_user,
            self.sip_password,
        ]


async def make_subject(api: httpx.AsyncClient, runtime: Runtime, name: str = "zelda") -> Subject:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", user=name)
    subject = Subject(
        world=world,
        root=root,
        aor=f"sip:{name}@acme.test",
        name=name.title(),
        email=f"{name}.mail@example.org",
        heir=f"{name}.heir@example.org",
        call_token=f"{name}-call-token-{'c' * 40}",
        notice_token=f"{name}-notice-token-{'n' * 40}",
        sip_user=f"{name}-auth-user",
        sip_password=f"{name}-secret-pw",
    )
    r = await api.patch(
        f"/v1/accounts/{world.account_id}",
        headers=world.operator,
        json={"notice_email": subject.email},
    )
    assert r.status_code == 200, r.text
    body = hand_over(
        "acme",
        address_of_record=subject.aor,
        auth_username=subject.sip_user,
        password=subject.sip_password,
    )
    body["push"]["call_push_token"] = subject.call_token
    body["push"]["notice_push_token"] = subject.notice_token
    r = await api.put("/v1/device/push-instance", headers=world.device, json=body)
    assert r.status_code == 201, r.text
    # A MESSAGE the gateway holds for the sleeping app (sender and content are personal).
    await MessageStore(runtime.db, runtime.clock, ttl=timedelta(days=7)).store(
        r.json()["instance"]["id"], f"<sip:{name}.friend@acme.test>", "text/plain", b"see you"
    )
    r = await api.put(
        f"/v1/accounts/{world.account_id}/post-mortem",
        headers=world.device,
        json={"action": "export", "designated_contact": subject.heir},
    )
    assert r.status_code == 200, r.text
    return subject
