"""Local push services and configurations shared by the push tests (all on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from push_helpers import APP, BUNDLE, FCM_PROJECT, RecordingHook, apns_config, incoming_call

from cloudphone.push import (
    AppPushConfig,
    FcmConfig,
    IncomingCall,
    PushConfig,
    PushDispatcher,
    WebPushConfig,
)
from cloudphone.testing.apns import ApnsTestKey, LocalApns, make_apns_key
from cloudphone.testing.fcm import LocalFcm, ServiceAccount, make_service_account
from cloudphone.testing.tls import TestCertificates
from cloudphone.testing.webpush import LocalWebPush, make_vapid_key


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def apns_key(tmp_path_factory: pytest.TempPathFactory) -> ApnsTestKey:
    return make_apns_key(tmp_path_factory.mktemp("apns"))


@pytest.fixture(scope="session")
def service_account_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fcm")


@pytest.fixture
async def local_apns(certs: TestCertificates, apns_key: ApnsTestKey) -> AsyncIterator[LocalApns]:
    server = LocalApns(certs)
    server.trust_key(apns_key, [BUNDLE])
    async with server:
        yield server


@pytest.fixture
async def local_fcm(certs: TestCertificates) -> AsyncIterator[LocalFcm]:
    async with LocalFcm(certs) as server:
        yield server


@pytest.fixture
def service_account(local_fcm: LocalFcm, service_account_dir: Path) -> ServiceAccount:
    # The file's own token_uri points at Google: the configured token_uri must win (P2).
    account = make_service_account(service_account_dir, FCM_PROJECT)
    local_fcm.trust(account, FCM_PROJECT)
    return account


@pytest.fixture
async def local_webpush(certs: TestCertificates) -> AsyncIterator[LocalWebPush]:
    async with LocalWebPush(certs) as server:
        yield server


@pytest.fixture
def push_config(
    local_apns: LocalApns,
    apns_key: ApnsTestKey,
    local_fcm: LocalFcm,
    service_account: ServiceAccount,
    local_webpush: LocalWebPush,
    certs: TestCertificates,
    tmp_path: Path,
) -> PushConfig:
    return PushConfig(
        apps={
            APP: AppPushConfig(
                sender="services",
                apns=apns_config(local_apns, apns_key, certs),
                fcm=FcmConfig(
                    project_id=FCM_PROJECT,
                    service_account_file=service_account.path,
                    endpoint=local_fcm.base_url,
                    token_uri=local_fcm.token_uri,
                    ca_file=certs.ca_file,
                ),
                webpush=WebPushConfig(
                    vapid_private_key_path=make_vapid_key(tmp_path),
                    vapid_subject="mailto:ops@example.org",
                    allowed_hosts=(local_webpush.host,),
                    ca_file=certs.ca_file,
                ),
            )
        }
    )


@pytest.fixture
def hook() -> RecordingHook:
    return RecordingHook()


@pytest.fixture
async def dispatcher(push_config: PushConfig, hook: RecordingHook) -> AsyncIterator[PushDispatcher]:
    d = PushDispatcher(push_config, on_token_dead=hook, registry=CollectorRegistry())
    yield d
    await d.aclose()


@pytest.fixture
def call() -> Iterator[IncomingCall]:
    yield incoming_call()
