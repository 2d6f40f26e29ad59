"""Promise P1: whether a feature (and its data) is active depends solely on the account's
configuration; feature off means a 403 naming the feature and nothing stored."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from cloudphone.accounts.features import (
    Feature,
    FeatureConfig,
    IncomingCallMode,
    LocationMode,
    require_feature,
)
from cloudphone.accounts.models import Device
from cloudphone.core.problems import FeatureDisabled
from cloudphone.runtime import Runtime
from tests.accounts.helpers import global_operator, make_world


@pytest.mark.promise("P1")
@pytest.mark.parametrize("feature", list(Feature))
def test_gate_refuses_every_feature_of_the_default_off_configuration(feature: Feature) -> None:
    config = FeatureConfig(incoming_call_mode=IncomingCallMode.BACKGROUND)
    with pytest.raises(FeatureDisabled) as refused:
        require_feature(config, feature)
    assert refused.value.status == 403
    assert refused.value.extensions["feature"] == feature.value


@pytest.mark.promise("P1")
def test_gate_follows_the_configuration_switch_for_switch() -> None:
    config = FeatureConfig(smart_contacts=True, location=LocationMode.EMERGENCY, attachments=True)
    for feature in (
        Feature.PUSH,
        Feature.SMART_CONTACTS,
        Feature.EMERGENCY_LOCATION,
        Feature.ATTACHMENTS,
    ):
        require_feature(config, feature)  # enabled: no exception
    for feature in (
        Feature.REGISTER_LOCATION,
        Feature.BLF,
        Feature.CALENDAR,
        Feature.ANALYTICS,
        Feature.DEBUG_LOGS,
    ):
        with pytest.raises(FeatureDisabled):
            require_feature(config, feature)


@pytest.mark.promise("P1")
async def test_push_tokens_refused_and_not_stored_when_push_is_off(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", features={"incoming_call_mode": "background"})
    r = await api.put(
        "/v1/device/push-tokens", headers=world.device, json={"call_push_token": "ab" * 32}
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["feature"] == "push"
    assert r.json()["type"].endswith("/feature-disabled")
    async with runtime.db.transaction() as s:
        device = (await s.scalars(select(Device))).one()
    assert device.call_push_token is None and device.notice_push_token is None


@pytest.mark.promise("P1")
async def test_push_tokens_accepted_once_the_account_enables_push(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", features={"incoming_call_mode": "background"})
    r = await api.patch(
        f"/v1/accounts/{world.account_id}",
        headers=world.operator,
        json={"feature_overrides": {"incoming_call_mode": "push"}},
    )
    assert r.status_code == 200
    r = await api.put(
        "/v1/device/push-tokens", headers=world.device, json={"call_push_token": "ab" * 32}
    )
    assert r.status_code == 200
    assert r.json()["has_call_push_token"] is True
