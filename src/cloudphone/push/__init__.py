"""Push delivery: send a typed notification to a device, get a typed outcome.

    dispatcher = PushDispatcher(config, on_token_dead=hook)
    outcome = await dispatcher.send("com.example.phone", "apns", PushToken(token), call)

Providers (``apns``, ``fcm``, ``webpush``, development ``dev``) each implement
:class:`PushService`; :class:`PushDispatcher` adds concurrency caps, metrics and the token-dead
hook. Only :class:`IncomingCall` is ever sent as a VoIP / high-priority call push.
"""

from cloudphone.push.config import (
    ApnsCertificateAuth,
    ApnsConfig,
    ApnsTokenAuth,
    AppPushConfig,
    FcmConfig,
    PushConfig,
    WebPushConfig,
)
from cloudphone.push.destinations import AllowedDestinations, DestinationRefused
from cloudphone.push.dev import LoggedPush
from cloudphone.push.dispatch import PushDispatcher, allowed_destinations
from cloudphone.push.notifications import (
    CallAnsweredElsewhere,
    CallCancelled,
    Caller,
    CallMissed,
    Delivery,
    IncomingCall,
    InstanceExpiring,
    Message,
    Notification,
    RegistrationWakeUp,
    delivery_of,
)
from cloudphone.push.outcomes import (
    Delivered,
    Outcome,
    Rejected,
    Retry,
    TokenDead,
    token_is_dead,
)
from cloudphone.push.service import Platform, PushService, PushToken, TokenDeadHook

__all__ = [
    "AllowedDestinations",
    "ApnsCertificateAuth",
    "ApnsConfig",
    "ApnsTokenAuth",
    "AppPushConfig",
    "CallAnsweredElsewhere",
    "CallCancelled",
    "CallMissed",
    "Caller",
    "Delivered",
    "Delivery",
    "DestinationRefused",
    "FcmConfig",
    "IncomingCall",
    "InstanceExpiring",
    "LoggedPush",
    "Message",
    "Notification",
    "Outcome",
    "Platform",
    "PushConfig",
    "PushDispatcher",
    "PushService",
    "PushToken",
    "RegistrationWakeUp",
    "Rejected",
    "Retry",
    "TokenDead",
    "TokenDeadHook",
    "WebPushConfig",
    "allowed_destinations",
    "delivery_of",
    "token_is_dead",
]
