"""Registration client (RFC 3261 §10.2, RFC 5626 §4.5) against a scripted registrar."""

from __future__ import annotations

from cloudphone.sip import Request, Response, SipURI, make_response, parse_uri
from cloudphone.sip.digest import Credentials, DigestServer
from cloudphone.sip.registration import (
    Registered,
    RegistrationClient,
    RegistrationConfig,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
)

KEY = b"k" * 32


def uri(text: str) -> SipURI:
    u = parse_uri(text)
    assert isinstance(u, SipURI)
    return u


CONFIG = RegistrationConfig(
    aor=uri("sip:alice@sip.test"),
    registrar=uri("sip:sip.test"),
    contact=uri("sip:alice@127.0.0.1:5099;transport=udp"),
    credentials=Credentials("alice", "alice-secret"),
    expires=600,
)


def client(random_value: float = 0.5, config: RegistrationConfig = CONFIG) -> RegistrationClient:
    return RegistrationClient(config, random=lambda: random_value, call_id="cid", from_tag="ft")


def with_via(request: Request) -> Request:
    request.headers.prepend("Via", f"SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{request.cseq.seq}")
    return request


def reply(request: Request, code: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return make_response(with_via(request), code, to_tag="reg", headers=headers or [])


def ok_with_binding(request: Request, expires: int) -> Response:
    return reply(
        request,
        200,
        [
            ("Contact", "<sip:other@192.0.2.1>;expires=3000"),
            ("Contact", f"<sip:alice@127.0.0.1:5099;transport=UDP>;expires={expires}"),
        ],
    )


def test_register_with_challenge_reads_binding_and_schedules_refresh() -> None:
    server = DigestServer("sip.test", KEY, algorithms=("MD5",))
    c = client(random_value=0.0)
    first = c.register(0.0)
    assert first.headers.get("expires") == "600" and first.cseq.seq == 1
    assert first.headers.get("authorization") is None
    challenge = reply(first, 401, server.challenge_headers(0.0))
    second, events = c.receive_response(challenge, 0.1)
    assert events == [] and second is not None
    assert second.call_id == "cid" and second.cseq.seq == 2  # §10.2.4 continuity
    assert server.verify(with_via(second), 0.2, {"alice": "alice-secret"}.get).ok
    _, events = c.receive_response(ok_with_binding(second, 300), 0.2)
    (event,) = events
    assert isinstance(event, Registered)
    assert event.expires == 300  # our binding's expires, not the other contact's
    assert event.refresh_at == 0.2 + 300 * 0.5  # random 0.0 → low end of the window
    assert c.state is RegistrationState.REGISTERED


def test_refresh_is_randomised_within_the_window() -> None:
    for value, fraction in ((0.0, 0.5), (1.0, 0.8)):
        c = client(random_value=value)
        _, events = c.receive_response(ok_with_binding(c.register(0.0), 1000), 0.0)
        assert isinstance(events[0], Registered) and events[0].refresh_at == 1000 * fraction


def test_refresh_fires_on_timer_with_same_call_id_and_next_cseq() -> None:
    c = client()
    c.receive_response(ok_with_binding(c.register(0.0), 100), 0.0)
    assert c.on_timer(10.0) is None
    refresh = c.on_timer(c.next_deadline or 0.0)
    assert refresh is not None and refresh.call_id == "cid" and refresh.cseq.seq == 2


def test_423_raises_expires_to_min_expires() -> None:
    c = client()
    first = c.register(0.0)
    retry, events = c.receive_response(reply(first, 423, [("Min-Expires", "1800")]), 0.1)
    assert events == [] and retry is not None
    assert retry.headers.get("expires") == "1800" and retry.cseq.seq == 2


def test_failures_back_off_exponentially_with_a_cap() -> None:
    config = RegistrationConfig(
        aor=CONFIG.aor,
        registrar=CONFIG.registrar,
        contact=CONFIG.contact,
        retry_base=30,
        retry_max=200,
    )
    c = client(random_value=1.0, config=config)
    waits = []
    now = 0.0
    for _ in range(5):
        _, events = c.receive_response(reply(c.register(now), 503), now)
        (event,) = events
        assert isinstance(event, RegistrationFailed) and event.retry_at is not None
        waits.append(event.retry_at - now)
        now = event.retry_at
        assert c.on_timer(now) is not None  # the retry REGISTER
    assert waits == [30, 60, 120, 200, 200]


def test_backoff_is_randomised_down_to_half() -> None:
    c = client(random_value=0.0)
    events = c.transaction_failed(0.0, timeout=True)
    assert events == [RegistrationFailed(408, "Request Timeout", 15.0)]


def test_retry_after_is_honoured() -> None:
    c = client(random_value=1.0)
    _, events = c.receive_response(reply(c.register(0.0), 503, [("Retry-After", "900")]), 0.0)
    assert isinstance(events[0], RegistrationFailed) and events[0].retry_at == 900.0


def test_wrong_password_gives_up_after_the_same_nonce_is_refused() -> None:
    server = DigestServer("sip.test", KEY)
    c = client()
    first = c.register(0.0)
    challenge = server.challenge_headers(0.0, salt=b"fixed")
    second, _ = c.receive_response(reply(first, 401, challenge), 0.0)
    assert second is not None
    third, events = c.receive_response(reply(second, 401, challenge), 0.0)
    assert third is None and isinstance(events[0], RegistrationFailed)
    assert events[0].status_code == 401


def test_unregister_sends_expires_zero_and_ends() -> None:
    c = client()
    c.receive_response(ok_with_binding(c.register(0.0), 100), 0.0)
    bye = c.unregister(5.0)
    assert bye.headers.get("expires") == "0" and bye.call_id == "cid" and bye.cseq.seq == 2
    _, events = c.receive_response(reply(bye, 200), 5.1)
    assert events == [Unregistered()] and c.next_deadline is None
    assert c.state is RegistrationState.UNREGISTERED


def test_instance_id_and_reg_id_in_contact() -> None:
    config = RegistrationConfig(
        aor=CONFIG.aor,
        registrar=CONFIG.registrar,
        contact=CONFIG.contact,
        instance_id="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        reg_id=1,
    )
    c = client(config=config)
    contact = c.register(0.0).headers.get("contact") or ""
    assert ";reg-id=1" in contact and '+sip.instance="<urn:uuid:' in contact
