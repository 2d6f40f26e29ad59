"""The one redaction function guards every log line, structlog's and the standard library's."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from cloudphone.core.logging import MASK, configure_logging, get_logger, redact_text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('Authorization: Digest username="alice", response="9f8e7d"', "9f8e7d"),
        ("Proxy-Authorization: Digest nonce=abc, response=deadbeef", "deadbeef"),
        ("Bearer cpo.abc.SM0GY-mf6yDGEOKkQHpAEQVQqBqF_IACe1wF7kdFf_I", "SM0GY"),
        ("password=hunter2&user=x", "hunter2"),
        ('{"token": "abcdef123456"}', "abcdef123456"),
        ("INVITE sip:bob@sip.test SIP/2.0", "bob"),
        ("From: <sips:alice@sip.test>;tag=1", "alice"),
        ("dial tel:+1-415-555-0100", "415"),
        ("caller +44 20 7946 0958 rang", "7946"),
        ("number 004930123456 rang", "004930123456"),
        ("mail carol@example.com", "carol"),
        ("apns token " + "a1" * 32, "a1a1a1a1"),
        ("pn-prid=0f3b2c; pn-provider=apns", "0f3b2c"),
        ("row ('v1.k1.y-G4r2gzzfoXpJJg7f9Jd7J_2Jy.c7EQbOWnjXqBSKPa4ksSiJw5hky0q', 1)", "y-G4r2"),
    ],
)
def test_redact_text_removes_secrets_and_personal_data(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T22:40:28Z",
        "listening on 127.0.0.1:5070",
        "registered 1200 instances in 3.5 s",
        "SIP/2.0 200 OK",
    ],
)
def test_redact_text_keeps_operational_facts(text: str) -> None:
    assert redact_text(text) == text


def _capture(level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level, "json", stream=stream)
    return stream


def test_structlog_events_are_redacted_by_field_name_and_content() -> None:
    stream = _capture()
    get_logger("t").info(
        "registered sip:alice@sip.test",
        password="alice-secret",
        push_token="ff" * 32,
        device_id="d1",
        nested={"authorization": "Digest x", "count": 3},
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert "alice" not in stream.getvalue()
    assert line["password"] == MASK
    assert line["push_token"] == MASK
    assert line["device_id"] == "d1"
    assert line["nested"] == {"authorization": MASK, "count": 3}
    assert line["timestamp"][:2] == "20"


def test_standard_library_records_go_through_the_same_redaction() -> None:
    stream = _capture()
    logging.getLogger("third.party").warning("auth failed for password=hunter2 from +15551234567")
    out = stream.getvalue()
    assert "hunter2" not in out and "5551234567" not in out
    assert "auth failed" in out


def test_database_drivers_never_log_statement_parameters() -> None:
    stream = _capture("debug")
    logging.getLogger("aiosqlite").debug("executing INSERT ... ('alice-secret',)")
    logging.getLogger("sqlalchemy.engine").info("[generated] ('alice-secret',)")
    assert "alice-secret" not in stream.getvalue()


def test_exception_text_is_redacted() -> None:
    stream = _capture()
    try:
        raise ValueError("bad password=swordfish")
    except ValueError:
        get_logger("t").exception("failed")
    assert "swordfish" not in stream.getvalue()
    assert "ValueError" in stream.getvalue()


def teardown_module() -> None:
    structlog.reset_defaults()
    configure_logging("info", "console")
