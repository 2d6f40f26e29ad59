"""Structured JSON logs, and the one redaction function that guards every log line.

``redact`` runs as a structlog processor on every event (including records from the standard
``logging`` module, routed through the same chain), so no call site has to remember it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

MASK = "[redacted]"

# Field names whose values are secret or personal whatever they look like.
_SENSITIVE_KEY = re.compile(
    r"pass(word|wd)?|secret|token|authorization|credential|cookie|private|api_?key|"
    r"master_?key|\bkey\b|ha1|nonce|digest|signature|jwt|bearer|phone|msisdn|email|"
    r"aor|address_of_record|display_name|caller|callee|contact|location|latitude|longitude",
    re.IGNORECASE,
)
# Names that merely refer to a secret (ids, counts, kinds) stay readable.
_HARMLESS_KEY = re.compile(r"(_id|_ids|_count|_kind|_type|_at|_expires|_platform)$", re.I)

# Patterns scrubbed inside any string value, including the event message itself.
_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization / Proxy-Authorization / WWW-Authenticate header lines: all of it.
    (
        re.compile(r"(?im)^((?:proxy-)?authorization|www-authenticate|proxy-authenticate)\s*:.*$"),
        r"\1: " + MASK,
    ),
    (re.compile(r"(?i)\b(bearer|basic|digest)\s+[A-Za-z0-9._~+/=,\"\s:-]{8,}"), r"\1 " + MASK),
    # key=value and key="value" pairs with sensitive keys (digest params, query strings, JSON).
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|response|cnonce|nonce|key|pn-prid|prid)"
            r"(\"?\s*[=:]\s*\"?)([^\s\",;&}]+)"
        ),
        r"\1\2" + MASK,
    ),
    # The user part of SIP/SIPS/TEL URIs: who is calling whom is personal data.
    (re.compile(r"(?i)\b(sips?:)([^@\s;>\"]+)@"), r"\1" + MASK + "@"),
    (re.compile(r"(?i)\btel:\+?[\d\-.() ]+"), "tel:" + MASK),
    # E-mail addresses.
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), MASK + "@email"),
    # Phone numbers: E.164 with its '+' (separators allowed), or a bare run of 7-15 digits.
    # Dates, times, IP addresses and ports do not match: they break the run with '-', ':', '.'.
    (re.compile(r"(?<![\w+])\+\d[\d\- ()]{5,18}\d(?!\w)"), MASK),
    (re.compile(r"(?<![\w.:/-])\d{7,15}(?![\w.:-])"), MASK),
    # Sealed values (core.crypto): ciphertext is still secret material.
    (re.compile(r"\bv1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"), MASK),
    # Long opaque hex/base64 strings look like push tokens or keys.
    (re.compile(r"\b[0-9a-fA-F]{40,}\b"), MASK),
)


def redact_text(text: str) -> str:
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SENSITIVE_KEY.search(key) and not _HARMLESS_KEY.search(key):
        return MASK if value not in (None, "", [], {}) else value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(key, v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor: secrets and personal data never reach a log line."""
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = redact_text(str(event_dict[key]))
        elif key == "exc_info":
            continue
        else:
            event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def _redact_rendered_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = redact_text(event_dict["exception"])
    return event_dict


def _drop_color_message(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's ANSI duplicate of the event
    return event_dict


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Route structlog and standard logging through one chain that ends in ``redact``."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.format_exc_info,
        _redact_rendered_exception,
        _drop_color_message,
        redact,
        # After redaction: the timestamp is ours and must stay readable.
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Database drivers log statements with their parameters at DEBUG: personal data and
    # sealed secrets. They never log below WARNING, whatever the service's level.
    for chatty in ("aiosqlite", "asyncpg", "sqlalchemy.engine", "sqlalchemy.pool"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
