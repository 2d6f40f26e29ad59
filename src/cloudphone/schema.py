"""Every domain's tables, imported in one place so metadata (migrations, data map) is complete."""

from __future__ import annotations

from sqlalchemy import MetaData

from cloudphone.accounts import models as _accounts  # noqa: F401
from cloudphone.gateway import messages as _gateway_messages  # noqa: F401
from cloudphone.gateway import models as _gateway  # noqa: F401
from cloudphone.privacy import models as _privacy  # noqa: F401
from cloudphone.store.db import Base


def metadata() -> MetaData:
    return Base.metadata
