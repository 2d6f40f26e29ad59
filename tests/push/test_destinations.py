"""Promise P2: push traffic reaches only the push services the operator configured."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from push_helpers import APP, FCM_PROJECT, send_once

from cloudphone.push import (
    AllowedDestinations,
    AppPushConfig,
    DestinationRefused,
    FcmConfig,
    IncomingCall,
    PushConfig,
    PushDispatcher,
    PushToken,
    Rejected,
    WebPushConfig,
    allowed_destinations,
)
from cloudphone.push.destinations import guarded_client
from cloudphone.push.service import Platform
from cloudphone.testing.fcm import LocalFcm, ServiceAccount
from cloudphone.testing.tls import TestCertificates
from cloudphone.testing.webpush import LocalWebPush, make_vapid_key


@pytest.mark.promise("P2")
async def test_subscription_pointing_elsewhere_is_refused_before_any_connection(
    dispatcher: PushDispatcher,
    local_webpush: LocalWebPush,
    certs: TestCertificates,
    call: IncomingCall,
) -> None:
    # A second push service the operator did not configure (say, a tracker a hostile app
    # registered as its "push endpoint").
    async with LocalWebPush(certs) as elsewhere:
        subscription = elsewhere.subscribe()
        token = PushToken(subscription.endpoint, subscription.p256dh, subscription.auth)

        outcome = await dispatcher.send(APP, "webpush", token, call)

        assert isinstance(outcome, Rejected)
        assert "not configured" in outcome.reason
        assert subscription.endpoint.split("/push/")[1] not in outcome.reason  # no secrets
        assert elsewhere.received == [] and elsewhere.refused == []
        assert elsewhere.connection_count == 0


@pytest.mark.promise("P2")
async def test_fcm_token_uri_comes_from_configuration_not_the_key_file(
    local_fcm: LocalFcm,
    service_account: ServiceAccount,
    certs: TestCertificates,
    call: IncomingCall,
) -> None:
    # The service-account file names Google's token endpoint; the configuration names the
    # local one. Only configured destinations are contacted, and the push still works.
    assert "oauth2.googleapis.com" in service_account.path.read_text()
    config = PushConfig(
        apps={
            APP: AppPushConfig(
                sender="services",
                fcm=FcmConfig(
                    project_id=FCM_PROJECT,
                    service_account_file=service_account.path,
                    endpoint=local_fcm.base_url,
                    token_uri=local_fcm.token_uri,
                    ca_file=certs.ca_file,
                ),
            )
        }
    )
    assert not allowed_destinations(config.apps[APP]).allows("https://oauth2.googleapis.com/token")
    outcome = await send_once(config.apps[APP], "fcm", PushToken("t" * 40), call)
    assert outcome.__class__.__name__ == "Delivered"


@pytest.mark.promise("P2")
async def test_guarded_client_refuses_every_unlisted_destination(
    local_webpush: LocalWebPush, certs: TestCertificates
) -> None:
    allowed = AllowedDestinations([f"https://{local_webpush.host}"])
    client = guarded_client(allowed, verify=certs.client_context())
    try:
        for url in [
            f"http://{local_webpush.host}/push/x",  # clear text
            "https://127.0.0.1:1/push/x",  # another port
            "https://localhost/push/x",  # another host
            "https://evil.example/push/x",
        ]:
            with pytest.raises(DestinationRefused):
                await client.post(url, content=b"x")
        response = await client.post(f"{local_webpush.base_url}/push/unknown", content=b"x")
        assert response.status_code == 404  # the configured one is reachable
    finally:
        await client.aclose()


@pytest.mark.promise("P2")
def test_allow_list_matches_hosts_ports_and_wildcards() -> None:
    allowed = AllowedDestinations(
        ["https://api.push.apple.com", "*.notify.windows.com", "ntfy.example.org:8443"]
    )
    assert allowed.allows("https://api.push.apple.com/3/device/abc")
    assert not allowed.allows("https://api.push.apple.com:8443/3/device/abc")
    assert allowed.allows("https://wns2-par02p.notify.windows.com/w/?token=x")
    assert not allowed.allows("https://notify.windows.com.evil.example/")
    assert not allowed.allows("https://xnotify.windows.com/")
    assert allowed.allows("https://ntfy.example.org:8443/up123")
    assert not allowed.allows("https://ntfy.example.org/up123")
    assert not allowed.allows("http://api.push.apple.com/3/device/abc")
    assert not allowed.allows("https://user@evil.example/")


@pytest.mark.promise("P2")
def test_allow_list_is_exactly_what_the_app_configures(tmp_path: Path) -> None:
    app = AppPushConfig(
        sender="services",
        webpush=WebPushConfig(
            vapid_private_key_path=make_vapid_key(tmp_path),
            vapid_subject="mailto:ops@example.org",
            allowed_hosts=("push.example.org",),
        ),
    )
    allowed = allowed_destinations(app)
    assert allowed.allows("https://push.example.org/up/1")
    for default_host in ("fcm.googleapis.com", "api.push.apple.com", "oauth2.googleapis.com"):
        assert not allowed.allows(f"https://{default_host}/")


async def test_refused_destination_does_not_leak_through_redirects(
    certs: TestCertificates,
) -> None:
    # The guard sits in the transport, so even a redirect target is checked.
    allowed = AllowedDestinations(["https://127.0.0.1:1"])
    client = guarded_client(allowed, verify=certs.client_context())
    try:
        with pytest.raises(DestinationRefused):
            await client.send(httpx.Request("GET", "https://other.example/"))
    finally:
        await client.aclose()


def test_configuration_refuses_clear_text_endpoints(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="https"):
        FcmConfig(
            project_id="p",
            service_account_file=tmp_path / "sa.json",
            endpoint="http://fcm.example.org",
        )
    with pytest.raises(ValueError, match="https"):
        AppPushConfig(sender="webhook", webhook_url="http://127.0.0.1:9/hook")


async def test_unreadable_credentials_are_a_rejection_not_a_crash(
    tmp_path: Path, call: IncomingCall
) -> None:
    config = PushConfig(
        apps={
            APP: AppPushConfig(
                sender="services",
                fcm=FcmConfig(project_id="p", service_account_file=tmp_path / "missing.json"),
            )
        }
    )
    outcome = await send_once(config.apps[APP], "fcm", PushToken("t" * 40), call)
    assert isinstance(outcome, Rejected) and "misconfigured" in outcome.reason


_labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_hosts = st.lists(_labels, min_size=1, max_size=4).map(".".join)


@pytest.mark.promise("P2")
@given(
    configured=st.lists(_hosts, min_size=1, max_size=4),
    host=_hosts,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    scheme=st.sampled_from(["https", "http", "ftp"]),
)
def test_only_configured_https_origins_are_ever_allowed(
    configured: list[str], host: str, port: int | None, scheme: str
) -> None:
    allowed = AllowedDestinations(configured)
    netloc = host if port is None else f"{host}:{port}"
    verdict = allowed.allows(f"{scheme}://{netloc}/path")
    expected = scheme == "https" and host in configured and port in (None, 443)
    assert verdict == expected


@pytest.mark.parametrize("platform", ["apns", "fcm"])
async def test_untrusted_service_certificate_is_rejected_not_retried(
    push_config: PushConfig, call: IncomingCall, platform: Platform
) -> None:
    # Without the test CA the local services look like impostors of APNs/FCM.
    app = push_config.apps[APP]
    untrusted = app.model_copy(
        update={
            "apns": app.apns.model_copy(update={"ca_file": None}) if app.apns else None,
            "fcm": app.fcm.model_copy(update={"ca_file": None}) if app.fcm else None,
        }
    )
    outcome = await send_once(untrusted, platform, PushToken("d" * 64), call)
    assert outcome == Rejected("TLS certificate verification failed")
