"""The composition root: one of each shared thing (settings, database, clock, keyring), and the
domain services built on them. The API, the CLI and the tests all start from here."""

from __future__ import annotations

from dataclasses import dataclass

from cloudphone.accounts.service import AccountsService
from cloudphone.core.clock import Clock, SystemClock
from cloudphone.core.crypto import Keyring, load_keyring
from cloudphone.core.settings import Settings
from cloudphone.store.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    keyring: Keyring
    accounts: AccountsService

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        clock = clock or SystemClock()
        db = Database(settings.database_url)
        secret = settings.master_key.get_secret_value() if settings.master_key else None
        keyring = load_keyring(secret, settings.master_key_file, settings.data_dir)
        return cls(
            settings=settings,
            db=db,
            clock=clock,
            keyring=keyring,
            accounts=AccountsService(db, clock, settings.public_url),
        )

    async def close(self) -> None:
        await self.db.dispose()
