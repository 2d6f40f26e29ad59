"""The composition root: one of each shared thing (settings, database, clock, keyring), and the
domain services built on them. The API, the CLI and the tests all start from here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cloudphone.accounts.service import AccountsService
from cloudphone.core.clock import Clock, SystemClock
from cloudphone.core.crypto import Keyring, load_keyring
from cloudphone.core.settings import Settings
from cloudphone.gateway.calls import CallRelay, DbDeviceDirectory
from cloudphone.gateway.edge import AppEdge, GatewayEndpoint
from cloudphone.gateway.engine import RegistrationEngine
from cloudphone.gateway.gateway import Gateway
from cloudphone.gateway.messages import MessageStore
from cloudphone.gateway.rfc8599 import PushProxy
from cloudphone.gateway.service import GatewayPolicy, PushInstanceService
from cloudphone.gateway.upstream import Upstream
from cloudphone.privacy.sealing import (
    VAULT_INFO_KEY,
    SubjectVault,
    configure_blind_index,
    load_index_key,
)
from cloudphone.privacy.service import PrivacyService
from cloudphone.push import PushDispatcher, PushToken, TokenDead, token_is_dead
from cloudphone.push.service import Platform as PushPlatform
from cloudphone.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    keyring: Keyring
    accounts: AccountsService
    push: PushDispatcher
    gateway: Gateway
    privacy: PrivacyService

    @classmethod
    def build(
        cls, settings: Settings, clock: Clock | None = None, upstream: Upstream | None = None
    ) -> Runtime:
        clock = clock or SystemClock()
        db = Database(settings.database_url)
        secret = settings.master_key.get_secret_value() if settings.master_key else None
        keyring = load_keyring(secret, settings.master_key_file, settings.data_dir)
        # Sealed personal fields open and seal inside every session's flush and load (P19).
        vault = SubjectVault(keyring, clock)
        db.sessions.configure(info={VAULT_INFO_KEY: vault})
        configure_blind_index(
            load_index_key(
                settings.privacy.blind_index_key_file or settings.data_dir / "blind-index.key"
            )
        )
        accounts = AccountsService(db, clock, settings.public_url)
        hook = _TokenDeadHook()
        push = PushDispatcher(settings.push, on_token_dead=hook, clock=clock)
        g = settings.gateway
        if upstream is None:
            upstream = RegistrationEngine(clock=clock, local_host=g.sip_host, udp_port=g.sip_port)
        instances = PushInstanceService(
            db,
            clock,
            keyring,
            upstream,
            push,
            GatewayPolicy(
                expiry_warnings=tuple(timedelta(hours=h) for h in g.expiry_warning_hours),
                failing_max_age=timedelta(hours=g.failing_max_age_hours),
                edge_uris=_edge_uris(settings),
            ),
        )
        hook.bind(accounts, instances)
        calls = None
        if isinstance(upstream, RegistrationEngine):
            upstream.sink = instances
            endpoint = GatewayEndpoint(user_agent=None)
            calls = CallRelay(
                endpoint,
                upstream,
                AppEdge(
                    endpoint,
                    instances,
                    realm=instances.policy.edge_realm,
                    algorithms=tuple(g.edge_digest_algorithms),
                ),
                DbDeviceDirectory(db),
                push,
                clock,
                hold_s=g.call_hold_s,
                messages=MessageStore(db, clock, ttl=timedelta(days=g.message_ttl_days)),
                max_message_bytes=g.message_max_bytes,
            )
            calls.pns = PushProxy(calls, db, push, settings.push)
        gateway = Gateway(
            instances,
            upstream,
            sweep_interval_s=g.sweep_interval_s,
            startup_rate=g.startup_registrations_per_s,
            calls=calls,
            settings=g,
        )
        privacy = PrivacyService(
            db,
            clock,
            keyring,
            vault,
            accounts,
            settings.privacy,
            settings.data_dir,
            settings.public_url,
        )

        async def end_push_instances(account_id: str) -> None:
            # Erasure disables push first: unregister upstream, erase the credentials (P4).
            await instances.end_for_devices(await privacy.devices_of(account_id), "erased")

        privacy.erasure_hooks.register("gateway", end_push_instances)
        return cls(settings, db, clock, keyring, accounts, push, gateway, privacy)

    async def close(self) -> None:
        await self.privacy.stop()
        await self.gateway.stop()
        await self.push.aclose()
        await self.db.dispose()


class _TokenDeadHook:
    """A dead token is cleared from its device and ends the push instance it would wake."""

    def bind(self, accounts: AccountsService, instances: PushInstanceService) -> None:
        self._accounts = accounts
        self._instances = instances

    async def on_token_dead(
        self, app_id: str, platform: PushPlatform, token: PushToken, outcome: TokenDead
    ) -> None:
        holders = [
            h
            for h in await self._accounts.devices_holding_push_token(token.value)
            # A token registered again after the service's death timestamp is alive.
            if h.tokens_updated_at is None or token_is_dead(outcome, h.tokens_updated_at)
        ]
        await self._instances.end_for_devices(
            [h.device_id for h in holders if h.as_call_token], "push_token_dead"
        )
        await self._accounts.clear_push_token(token.value, [h.device_id for h in holders])


def _edge_uris(settings: Settings) -> tuple[str, ...]:
    """The edge's listening points as SIP URIs (ports left to the OS are not advertised)."""
    g = settings.gateway
    host = f"[{g.edge_host}]" if ":" in g.edge_host else g.edge_host
    uris = []
    if g.edge_tls_port and g.edge_tls_cert_file:
        uris.append(f"sip:{host}:{g.edge_tls_port};transport=tls")
    if g.edge_tcp_port:
        uris.append(f"sip:{host}:{g.edge_tcp_port};transport=tcp")
    if g.edge_udp_port:
        uris.append(f"sip:{host}:{g.edge_udp_port}")
    return tuple(uris)
