"""The entry point: route a push to the app's service, cap concurrency, count, report.

Per-service concurrency caps, metrics, exception-to-outcome mapping and the token-dead hook
live here, once, so each provider module only speaks its protocol (the Sygnal shape).
"""

from __future__ import annotations

import asyncio
import ssl

import httpx
import structlog
from prometheus_client import CollectorRegistry

from cloudphone.core.clock import Clock, SystemClock
from cloudphone.push.apns import ApnsConnection, ApnsService, ProviderToken, connection_key
from cloudphone.push.apns import ssl_context_for as apns_ssl_context
from cloudphone.push.config import AppPushConfig, PushConfig
from cloudphone.push.destinations import AllowedDestinations, DestinationRefused
from cloudphone.push.dev import LoggedPush, LogSender, WebhookSender
from cloudphone.push.fcm import FcmService
from cloudphone.push.metrics import push_metrics
from cloudphone.push.notifications import IncomingCall, Notification, delivery_of, kind_of
from cloudphone.push.outcomes import (
    Delivered,
    Outcome,
    Rejected,
    Retry,
    TokenDead,
    token_fingerprint,
)
from cloudphone.push.service import Platform, PushService, PushToken, TokenDeadHook
from cloudphone.push.webpush import WebPushService

log = structlog.get_logger(__name__)

# How long a caller shed at the concurrency cap should wait before trying again.
_SHED_RETRY_AFTER = 0.1


def allowed_destinations(app: AppPushConfig) -> AllowedDestinations:
    """Every origin the app's push configuration names, and nothing else (promise P2)."""
    origins: list[str] = []
    if app.apns is not None:
        origins.append(app.apns.url)
    if app.fcm is not None:
        origins += [app.fcm.endpoint, app.fcm.resolved_token_uri]
    if app.webpush is not None:
        origins += list(app.webpush.allowed_hosts)
    if app.webhook_url is not None:
        origins.append(app.webhook_url)
    return AllowedDestinations(origins)


class PushDispatcher:
    """Sends notifications for every configured app; one instance per process."""

    def __init__(
        self,
        config: PushConfig,
        *,
        on_token_dead: TokenDeadHook | None = None,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._clock = clock or SystemClock()
        self._hook = on_token_dead
        self._metrics = push_metrics(registry)
        self._services: dict[tuple[str, str], PushService] = {}
        self._in_flight: dict[int, int] = {}
        self._apns_connections: dict[tuple[str, str], ApnsConnection] = {}
        self._provider_tokens: dict[tuple[str, str], ProviderToken] = {}
        self._log_senders: dict[str, LogSender] = {}

    async def send(
        self, app_id: str, platform: Platform, token: PushToken, notification: Notification
    ) -> Outcome:
        """Push ``notification`` to one device; never raises for delivery failures."""
        delivery_of(notification)  # TypeError for anything that is not a notification kind
        if isinstance(notification, IncomingCall) and notification.ring_until <= self._clock.now():
            # Only a live call may wake the app as a call; a late one would ring for nobody.
            return Rejected("ring window over")
        try:
            service = self._service(app_id, platform)
        except LookupError as exc:
            return Rejected(str(exc))
        except (OSError, ValueError, KeyError, DestinationRefused) as exc:
            # A broken configuration (unreadable key, refused endpoint) must not crash the
            # call path; it is logged loudly and retried on the next push.
            log.error(
                "push service misconfigured", app_id=app_id, platform=platform, error=str(exc)
            )
            return Rejected(f"{platform} misconfigured for app {app_id!r}")
        kind = kind_of(notification)
        key = id(service)
        in_flight = self._in_flight.get(key, 0)
        if in_flight >= service.max_concurrency:
            # Fail fast: a queued call push would ring after the caller gave up.
            self._metrics.shed.labels(service.name).inc()
            outcome: Outcome = Retry(_SHED_RETRY_AFTER, "concurrency cap reached")
            self._metrics.sent.labels(service.name, kind, "retry").inc()
            return outcome
        self._in_flight[key] = in_flight + 1
        gauge = self._metrics.in_flight.labels(service.name)
        gauge.inc()
        try:
            outcome = await self._attempt(service, token, notification)
        finally:
            self._in_flight[key] -= 1
            gauge.dec()
        self._record(app_id, service.name, kind, token, outcome)
        if isinstance(outcome, TokenDead) and self._hook is not None:
            try:
                await self._hook.on_token_dead(app_id, platform, token, outcome)
            except Exception:  # the push outcome stands even if the hook fails
                log.exception("token-dead hook failed", app_id=app_id, service=service.name)
        return outcome

    async def _attempt(
        self, service: PushService, token: PushToken, notification: Notification
    ) -> Outcome:
        try:
            return await service.send(token, notification)
        except DestinationRefused as exc:
            log.warning("push destination refused", service=service.name, error=str(exc))
            return Rejected(str(exc))
        except (TimeoutError, httpx.TimeoutException):
            return Retry(0.0, "timeout")
        except (ConnectionError, OSError, httpx.TransportError) as exc:
            if _tls_verification_failed(exc):
                # Not transient: a wrong trust anchor or an impostor; retrying will not help.
                log.error("push service certificate not trusted", service=service.name)
                return Rejected("TLS certificate verification failed")
            return Retry(0.0, f"connection failed: {type(exc).__name__}")

    def _record(
        self, app_id: str, service: str, kind: str, token: PushToken, outcome: Outcome
    ) -> None:
        label = type(outcome).__name__.lower()
        self._metrics.sent.labels(service, kind, label).inc()
        fields = {
            "app_id": app_id,
            "service": service,
            "kind": kind,
            "device": token_fingerprint(token.value),
            "outcome": label,
        }
        if isinstance(outcome, Delivered):
            self._metrics.latency.labels(service, kind).observe(outcome.latency)
            log.debug("push delivered", latency_ms=round(outcome.latency * 1000, 1), **fields)
        else:
            log.info("push not delivered", reason=outcome_reason(outcome), **fields)

    def recent_pushes(self, app_id: str | None = None) -> list[LoggedPush]:
        """The pushes kept by the ``log`` development sender, oldest first."""
        if app_id is None:
            senders = list(self._log_senders.values())
        else:
            senders = [self._log_senders[app_id]] if app_id in self._log_senders else []
        pushes = [p for s in senders for p in s.recent()]
        return sorted(pushes, key=lambda p: p.sent_at)

    def _service(self, app_id: str, platform: Platform) -> PushService:
        cached = self._services.get((app_id, platform))
        if cached is not None:
            return cached
        app = self._config.apps.get(app_id, self._config.default_app)
        if app is None:
            raise LookupError(f"no push configuration for app {app_id!r}")
        service = self._build(app_id, app, platform)
        self._services[(app_id, platform)] = service
        return service

    def _build(self, app_id: str, app: AppPushConfig, platform: Platform) -> PushService:
        allowed = allowed_destinations(app)
        if app.sender == "log":
            sender = self._log_senders.get(app_id)
            if sender is None:
                sender = self._log_senders[app_id] = LogSender(
                    app_id, app.log_keep_last, self._clock
                )
            return sender
        if app.sender == "webhook":
            assert app.webhook_url is not None
            return WebhookSender(
                app_id,
                app.webhook_url,
                allowed,
                _verify(app.webhook_ca_file),
                platform,
                clock=self._clock,
            )
        if platform == "apns" and app.apns is not None:
            key = connection_key(app.apns)
            connection = self._apns_connections.get(key)
            if connection is None:
                connection = self._apns_connections[key] = ApnsConnection(
                    app.apns.url,
                    allowed,
                    ssl_context=apns_ssl_context(app.apns),
                    idle_timeout=app.apns.idle_timeout_s,
                )
            provider_token = None
            if app.apns.auth.kind == "token":
                provider_token = self._provider_tokens.get(key)
                if provider_token is None:
                    provider_token = self._provider_tokens[key] = ProviderToken(
                        app.apns.auth, self._clock
                    )
            return ApnsService(app.apns, connection, provider_token, clock=self._clock)
        if platform == "fcm" and app.fcm is not None:
            return FcmService(app.fcm, allowed, clock=self._clock)
        if platform == "webpush" and app.webpush is not None:
            return WebPushService(app.webpush, allowed, clock=self._clock)
        raise LookupError(f"app {app_id!r} has no {platform} configuration")

    async def aclose(self) -> None:
        services = list(self._services.values())
        self._services.clear()
        await asyncio.gather(*(s.aclose() for s in services), return_exceptions=True)
        for connection in self._apns_connections.values():
            await connection.aclose()
        self._apns_connections.clear()


def outcome_reason(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    return outcome.reason


def _verify(ca_file: object) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


def _tls_verification_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):  # httpx wraps the ssl error; follow the chain a few links
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
