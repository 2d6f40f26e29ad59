"""The one call every push service implements, and the address of a device on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from cloudphone.push.notifications import Notification
from cloudphone.push.outcomes import Outcome, TokenDead

Platform = Literal["apns", "fcm", "webpush"]


@dataclass(frozen=True, slots=True)
class PushToken:
    """Where a device receives pushes.

    ``value`` is the APNs device token (hex), the FCM registration token, or the Web Push /
    UnifiedPush endpoint URL; Web Push subscriptions also carry the client's P-256 public key
    and auth secret (RFC 8291 §3.2), both base64url as browsers export them.
    """

    value: str = field(repr=False)
    p256dh: str | None = field(default=None, repr=False)
    auth: str | None = field(default=None, repr=False)


class PushService(Protocol):
    """One push provider (APNs, FCM, Web Push, or a development stand-in) for one app."""

    name: str  # metric label: "apns", "fcm", "webpush", "log", "webhook"
    max_concurrency: int

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        """Deliver one push; failures are outcomes, not exceptions."""
        ...

    async def aclose(self) -> None: ...


class TokenDeadHook(Protocol):
    """Told when a service declares a token dead, so its device record can be cleared.

    The foundation clears the token (comparing its registration time with ``outcome.timestamp``
    via :func:`cloudphone.push.outcomes.token_is_dead`); the gateway reacts to the lost device.
    """

    async def on_token_dead(
        self, app_id: str, platform: Platform, token: PushToken, outcome: TokenDead
    ) -> None: ...
