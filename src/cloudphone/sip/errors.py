"""Typed errors of the SIP core.

As in h11, a mistake of the peer (a malformed message) and a mistake of ours (using the API in a
way the protocol forbids) are different exceptions: the first is answered with a response, the
second is a bug.
"""

from __future__ import annotations


class SIPError(Exception):
    """Base class of every error raised by :mod:`cloudphone.sip`."""


class SIPSyntaxError(SIPError):
    """The peer sent something RFC 3261 §25 says is malformed.

    ``status_code`` is what a UAS answers with (§8.2, §21.4.1): 400, or 505 for a SIP version
    other than 2.0 (§8.2.3 says 505 for an unsupported version), or 513 for a message too large.
    """

    def __init__(self, reason: str, status_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class MessageTooLarge(SIPSyntaxError):
    """A stream message exceeded the configured size limit (answered with 513, §21.5.14)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 513)


class LocalProtocolError(SIPError):
    """Our own code asked the state machine for something the protocol does not allow."""
