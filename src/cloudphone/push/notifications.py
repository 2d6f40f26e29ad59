"""What cloudphone pushes: one type per notification kind.

The kind decides how a push is delivered, never the caller. Only a live :class:`IncomingCall`
is delivered as a VoIP (iOS) / high-priority (Android, Web Push) push: since iOS 13 the system
kills an app that receives a VoIP push without reporting a call to CallKit, so a VoIP push for
anything else would break the app. :func:`delivery_of` looks the class up by *exact* type, so a
subclass of another kind cannot sneak onto the VoIP path.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, final


class Delivery(enum.Enum):
    """How urgently and on which channel a kind of notification travels."""

    VOIP = "voip"  # APNs VoIP topic, FCM/Web Push high priority, TTL = ring window
    ALERT = "alert"  # user-visible notification
    BACKGROUND = "background"  # silent wake-up, low priority


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


@final
@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the SIP From header presents it."""

    uri: str
    display_name: str | None = None


@final
@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A call ringing right now; the only kind that may wake the app as a VoIP push."""

    caller: Caller
    call_id: str
    sent_at: dt.datetime
    ring_until: dt.datetime  # end of the ring window: the push is worthless afterwards

    def __post_init__(self) -> None:
        if self.sent_at.tzinfo is None or self.ring_until.tzinfo is None:
            raise ValueError("IncomingCall needs timezone-aware timestamps")
        if self.ring_until <= self.sent_at:
            raise ValueError("ring window must end after the push is sent")

    def ring_seconds(self, now: dt.datetime) -> int:
        """Seconds left in the ring window (at least 1: 0 would mean 'store forever' to FCM)."""
        return max(1, int((self.ring_until - now).total_seconds()))

    def payload(self) -> dict[str, Any]:
        return {
            "type": "incoming_call",
            "call_id": self.call_id,
            "caller_uri": self.caller.uri,
            "caller_name": self.caller.display_name or "",
            "sent_at": _epoch(self.sent_at),
            "ring_until": _epoch(self.ring_until),
        }


@final
@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The caller hung up before anyone answered; the app stops ringing."""

    call_id: str
    caller: Caller

    def payload(self) -> dict[str, Any]:
        return {"type": "call_cancelled", "call_id": self.call_id, "caller_uri": self.caller.uri}


@final
@dataclass(frozen=True, slots=True)
class CallMissed:
    call_id: str
    caller: Caller

    def payload(self) -> dict[str, Any]:
        return {
            "type": "call_missed",
            "call_id": self.call_id,
            "caller_uri": self.caller.uri,
            "caller_name": self.caller.display_name or "",
        }


@final
@dataclass(frozen=True, slots=True)
class CallAnsweredElsewhere:
    call_id: str

    def payload(self) -> dict[str, Any]:
        return {"type": "call_answered_elsewhere", "call_id": self.call_id}


@final
@dataclass(frozen=True, slots=True)
class Message:
    """A new message is waiting; the content stays on the server, only its id travels."""

    message_id: str
    sender_uri: str

    def payload(self) -> dict[str, Any]:
        return {"type": "message", "message_id": self.message_id, "sender_uri": self.sender_uri}


@final
@dataclass(frozen=True, slots=True)
class InstanceExpiring:
    """The push instance expires soon; the app must re-register to keep receiving calls."""

    expires_at: dt.datetime

    def payload(self) -> dict[str, Any]:
        return {"type": "instance_expiring", "expires_at": _epoch(self.expires_at)}


@final
@dataclass(frozen=True, slots=True)
class RegistrationWakeUp:
    """A silent nudge so the app refreshes its registration."""

    def payload(self) -> dict[str, Any]:
        return {"type": "registration_wake_up"}


Notification = (
    IncomingCall
    | CallCancelled
    | CallMissed
    | CallAnsweredElsewhere
    | Message
    | InstanceExpiring
    | RegistrationWakeUp
)

_DELIVERY: dict[type, Delivery] = {
    IncomingCall: Delivery.VOIP,
    CallCancelled: Delivery.ALERT,
    CallMissed: Delivery.ALERT,
    CallAnsweredElsewhere: Delivery.ALERT,
    Message: Delivery.ALERT,
    InstanceExpiring: Delivery.ALERT,
    RegistrationWakeUp: Delivery.BACKGROUND,
}


def delivery_of(notification: Notification) -> Delivery:
    """The delivery class of a notification; raises ``TypeError`` for anything unknown."""
    try:
        return _DELIVERY[type(notification)]
    except KeyError:
        raise TypeError(f"not a push notification kind: {type(notification).__name__}") from None


_KIND: dict[type, str] = {
    IncomingCall: "incoming_call",
    CallCancelled: "call_cancelled",
    CallMissed: "call_missed",
    CallAnsweredElsewhere: "call_answered_elsewhere",
    Message: "message",
    InstanceExpiring: "instance_expiring",
    RegistrationWakeUp: "registration_wake_up",
}


def kind_of(notification: Notification) -> str:
    """Stable short name of the kind (the payload's ``type``), for logs and metric labels."""
    return _KIND[type(notification)]


def collapse_key(notification: Notification) -> str | None:
    """Pushes about the same call replace each other on the device (cancel replaces ring)."""
    if isinstance(notification, CallCancelled | CallMissed | CallAnsweredElsewhere):
        return f"call-{notification.call_id}"[:64]
    if isinstance(notification, InstanceExpiring):
        return "instance-expiring"
    return None
