"""``cloudphone``: serve, migrate, administer, inspect. Errors are one line and a non-zero exit."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from cloudphone.accounts.features import FeatureConfig
from cloudphone.accounts.schemas import AccountCreate, DeviceCreate, Platform, TenantCreate
from cloudphone.core.crypto import CryptoError
from cloudphone.core.datamap import build_datamap, render_json, render_markdown
from cloudphone.core.logging import configure_logging
from cloudphone.core.problems import Problem
from cloudphone.core.settings import Settings
from cloudphone.privacy.requests import PostMortemAction, RequestKind
from cloudphone.privacy.schemas import (
    DirectiveIn,
    DisclosureCreate,
    HoldCreate,
    PolicyCreate,
    RectifyChanges,
    RequestCreate,
    RequestProcess,
    RequestRefuse,
)
from cloudphone.runtime import Runtime
from cloudphone.schema import metadata
from cloudphone.store.migrate import upgrade

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
config_app = typer.Typer(no_args_is_help=True, help="Effective settings.")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants (providers).")
account_app = typer.Typer(no_args_is_help=True, help="SIP accounts of a tenant.")
device_app = typer.Typer(no_args_is_help=True, help="Devices of an account.")
token_app = typer.Typer(no_args_is_help=True, help="Operator API tokens.")
privacy_app = typer.Typer(no_args_is_help=True, help="Privacy operations.")
provision_app = typer.Typer(no_args_is_help=True, help="Onboarding the app.")
instances_app = typer.Typer(no_args_is_help=True, help="Push instances of the gateway.")
for sub, name in (
    (db_app, "db"),
    (config_app, "config"),
    (tenant_app, "tenant"),
    (account_app, "account"),
    (device_app, "device"),
    (token_app, "token"),
    (privacy_app, "privacy"),
    (provision_app, "provision"),
    (instances_app, "instances"),
):
    app.add_typer(sub, name=name)

P = ParamSpec("P")
T = TypeVar("T")


class CLIError(Exception):
    pass


def _one_line_errors(func: Callable[P, T]) -> Callable[P, T]:
    """Every failure the user can cause becomes one readable line on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except Problem as exc:
            message = exc.detail
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "settings"
            message = f"invalid {where}: {first['msg']}"
        except (CLIError, CryptoError, OSError) as exc:
            message = str(exc)
        typer.echo(f"cloudphone: error: {message}", err=True)
        raise typer.Exit(1)

    return wrapper


def _settings() -> Settings:
    return Settings()


def _with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    settings = _settings()
    # Administration commands print results on stdout; only warnings belong beside them.
    quiet = settings.log_level if settings.log_level.lower() in ("warning", "error") else "warning"
    configure_logging(quiet, "console")

    async def _go() -> T:
        rt = Runtime.build(settings)
        try:
            await upgrade(rt.db)
            return await work(rt)
        finally:
            await rt.close()

    return asyncio.run(_go())


def _print(value: BaseModel | list[Any] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        typer.echo(value.model_dump_json(indent=2))
    else:
        plain = (
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
            if isinstance(value, list)
            else value
        )
        typer.echo(json.dumps(plain, indent=2, default=str))


@app.command()
@_one_line_errors
def serve(
    development: Annotated[
        bool, typer.Option("--development", help="Allow plain HTTP (never in production).")
    ] = False,
) -> None:
    """Run the service: HTTP API (and, as they land, the SIP side and background jobs)."""
    import uvicorn

    from cloudphone.api.app import create_app

    overrides = {"development_mode": True} if development else {}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if (
        not settings.development_mode
        and not settings.tls_cert_file
        and not settings.trusted_proxies
    ):
        raise CLIError(
            "refusing plain HTTP outside development mode: set tls_cert_file/tls_key_file, "
            "trusted_proxies (behind a TLS proxy), or pass --development"
        )
    configure_logging(settings.log_level, settings.log_format)
    rt = Runtime.build(settings)
    asyncio.run(upgrade(rt.db))
    uvicorn.run(
        create_app(rt, own_runtime=True),
        host=settings.http_host,
        port=settings.http_port,
        ssl_certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
        ssl_keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        log_config=None,
        access_log=False,
    )


@db_app.command("upgrade")
@_one_line_errors
def db_upgrade() -> None:
    """Apply all migrations to the configured database."""

    async def work(_rt: Runtime) -> None:
        return None

    _with_runtime(work)
    typer.echo("database is at the latest schema")


@config_app.command("show")
@_one_line_errors
def config_show() -> None:
    """Print the effective settings, secrets masked."""
    typer.echo(json.dumps(_settings().masked(), indent=2))


@token_app.command("create")
@_one_line_errors
def token_create(
    tenant: Annotated[str | None, typer.Option(help="Confine the token to this tenant id.")] = None,
    label: Annotated[str, typer.Option(help="A note saying who holds it.")] = "",
) -> None:
    """Issue an operator token (global unless --tenant). Shown once."""
    _print(_with_runtime(lambda rt: rt.accounts.issue_operator_token(None, tenant, label)))


@tenant_app.command("create")
@_one_line_errors
def tenant_create(
    name: str,
    domain: Annotated[
        list[str] | None, typer.Option(help="An allowed SIP domain (repeat).")
    ] = None,
    registrar: Annotated[
        list[str] | None, typer.Option(help="An allowed registrar host[:port] (repeat).")
    ] = None,
    features: Annotated[
        str, typer.Option(help="Feature defaults as JSON, e.g. '{\"blf\": true}'.")
    ] = "{}",
) -> None:
    """Create a tenant (a provider)."""
    defaults = FeatureConfig.model_validate_json(features)
    body = TenantCreate(
        name=name,
        sip_domains=domain or [],
        registrar_hosts=registrar or [],
        feature_defaults=defaults,
    )
    _print(_with_runtime(lambda rt: rt.accounts.create_tenant(None, body)))


@tenant_app.command("list")
@_one_line_errors
def tenant_list() -> None:
    """List tenants."""
    _print(_with_runtime(lambda rt: rt.accounts.list_tenants(None)))


@account_app.command("create")
@_one_line_errors
def account_create(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    aor: Annotated[str, typer.Option(help="Address of record, sip:user@domain.")],
    display_name: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a SIP account at a tenant."""
    body = AccountCreate(address_of_record=aor, display_name=display_name)
    _print(_with_runtime(lambda rt: rt.accounts.create_account(None, tenant, body)))


@account_app.command("list")
@_one_line_errors
def account_list(tenant: Annotated[str, typer.Option(help="Tenant id.")]) -> None:
    """List a tenant's accounts."""
    _print(_with_runtime(lambda rt: rt.accounts.list_accounts(None, tenant)))


@device_app.command("create")
@_one_line_errors
def device_create(
    account: Annotated[str, typer.Option(help="Account id.")],
    platform: Annotated[Platform, typer.Option()],
    app_id: Annotated[str, typer.Option(help="The app's bundle / package id.")],
) -> None:
    """Enrol a device directly; prints its credential once."""
    body = DeviceCreate(platform=platform, app_id=app_id)
    _print(_with_runtime(lambda rt: rt.accounts.create_device(None, account, body)))


@device_app.command("list")
@_one_line_errors
def device_list(account: Annotated[str, typer.Option(help="Account id.")]) -> None:
    """List an account's devices."""
    _print(_with_runtime(lambda rt: rt.accounts.list_devices(None, account)))


@provision_app.command("qr")
@_one_line_errors
def provision_qr(
    account: Annotated[str, typer.Option(help="Account id.")],
    ascii_art: Annotated[bool, typer.Option("--ascii/--no-ascii", help="Draw the QR.")] = True,
) -> None:
    """Print an onboarding QR payload (a one-time code valid 24 h) for the app to scan."""
    issued = _with_runtime(lambda rt: rt.accounts.create_enrollment(None, account))
    typer.echo(issued.qr_payload)
    if ascii_art:
        import qrcode

        qr = qrcode.QRCode(border=1)
        qr.add_data(issued.qr_payload)
        qr.print_ascii(out=sys.stdout)


@instances_app.command("list")
@_one_line_errors
def instances_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's instances.")] = None,
) -> None:
    """Push instances with their registration state (registered / failing + SIP status)."""

    async def work(rt: Runtime) -> list[Any]:
        if tenant is None:
            return await rt.gateway.instances.list_all()
        return await rt.gateway.instances.list_for_tenant(None, tenant)

    rows = _with_runtime(work)
    typer.echo(f"{'instance':32}  {'state':11}  {'sip':>3}  {'expires_at':25}  registrar")
    for row in rows:
        status = str(row.last_sip_status or "-")
        typer.echo(
            f"{row.id:32}  {row.state.value:11}  {status:>3}  "
            f"{row.expires_at.isoformat():25}  {row.registrar} ({row.transport.value})"
        )


@privacy_app.command("datamap")
@_one_line_errors
def privacy_datamap(
    fmt: Annotated[str, typer.Option("--format", help="md or json")] = "md",
) -> None:
    """Print the inventory of personal data, generated from the column declarations."""
    entries = build_datamap(metadata())
    if fmt == "md":
        typer.echo(render_markdown(entries))
    elif fmt == "json":
        typer.echo(json.dumps(render_json(entries), indent=2))
    else:
        raise CLIError(f"unknown format {fmt!r}; use md or json")


# -- privacy operations (P15, P17-P20) --------------------------------------------------------

request_app = typer.Typer(no_args_is_help=True, help="Data-subject requests.")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds.")
policy_app = typer.Typer(no_args_is_help=True, help="Privacy policy versions and notices.")
disclosure_app = typer.Typer(no_args_is_help=True, help="The disclosure log.")
for _sub, _name in (
    (request_app, "request"),
    (hold_app, "hold"),
    (policy_app, "policy"),
    (disclosure_app, "disclosure"),
):
    privacy_app.add_typer(_sub, name=_name)


@privacy_app.command("retention")
@_one_line_errors
def privacy_retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be purged; change nothing.")
    ] = False,
) -> None:
    """Enforce every retention rule now (the service also runs this periodically)."""
    _print(_with_runtime(lambda rt: rt.privacy.retention(dry_run=dry_run)))


@privacy_app.command("rules")
@_one_line_errors
def privacy_rules() -> None:
    """The retention rules and how each is enforced (with the operator's overrides)."""

    async def work(rt: Runtime) -> dict[str, str]:
        return {rule: e.describe() for rule, e in rt.privacy.rules.items()}

    _print(_with_runtime(work))


@privacy_app.command("replay-erasures")
@_one_line_errors
def privacy_replay_erasures() -> None:
    """After restoring a backup: erase again every subject the erasure ledger lists."""

    async def work(rt: Runtime) -> dict[str, Any]:
        return {"erased_again": await rt.privacy.replay_erasures()}

    _print(_with_runtime(work))


@privacy_app.command("erase")
@_one_line_errors
def privacy_erase(
    account: Annotated[str, typer.Option(help="Account id.")],
    reason: Annotated[str, typer.Option(help="Why (a reference naming no one).")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: erasure is irreversible.")] = False,
) -> None:
    """Erase a subject everywhere and shred its key. Irreversible."""
    if not yes:
        raise CLIError("erasure is irreversible: pass --yes to confirm")

    async def work(rt: Runtime) -> dict[str, Any]:
        return {"tables": await rt.privacy.erase(None, account, reason=reason)}

    _print(_with_runtime(work))


@privacy_app.command("death")
@_one_line_errors
def privacy_death(account: Annotated[str, typer.Option(help="Account id.")]) -> None:
    """Record the account holder's death; their post-mortem directive is carried out."""
    _print(_with_runtime(lambda rt: rt.privacy.record_death(None, account)))


@privacy_app.command("audit")
@_one_line_errors
def privacy_audit(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
) -> None:
    """The audit trail, newest first (ids and times only)."""
    _print(_with_runtime(lambda rt: rt.privacy.audit(None, tenant)))


@privacy_app.command("housekeeping")
@_one_line_errors
def privacy_housekeeping() -> None:
    """One run of the periodic job: retention purge, expired exports, pending notices."""
    _print(_with_runtime(lambda rt: rt.privacy.housekeeping()))


@request_app.command("file")
@_one_line_errors
def request_file(
    account: Annotated[str, typer.Option(help="Account id.")],
    kind: Annotated[RequestKind, typer.Option()],
) -> None:
    """File a request on the user's behalf (it starts unverified)."""
    body = RequestCreate(kind=kind)
    _print(_with_runtime(lambda rt: rt.privacy.file_request(None, account, body)))


@request_app.command("list")
@_one_line_errors
def request_list(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    open_only: Annotated[bool, typer.Option("--open", help="Only open requests.")] = False,
) -> None:
    """A tenant's requests, due first, with overdue flags."""
    _print(_with_runtime(lambda rt: rt.privacy.list_requests(None, tenant, open_only=open_only)))


@request_app.command("overdue")
@_one_line_errors
def request_overdue() -> None:
    """Open requests from day 20 on (they are due by day 30)."""
    _print(_with_runtime(lambda rt: rt.privacy.overdue_soon(None)))


@request_app.command("verify")
@_one_line_errors
def request_verify(request_id: str) -> None:
    """Record that the requester's identity was verified."""
    _print(_with_runtime(lambda rt: rt.privacy.verify_request(None, request_id)))


@request_app.command("process")
@_one_line_errors
def request_process(
    request_id: str,
    display_name: Annotated[str | None, typer.Option(help="Rectify: the correct name.")] = None,
    notice_email: Annotated[str | None, typer.Option(help="Rectify: the notice e-mail.")] = None,
    directive: Annotated[
        PostMortemAction | None, typer.Option(help="Post-mortem: erase, export or keep.")
    ] = None,
    designated_contact: Annotated[
        str | None, typer.Option(help="Post-mortem export: the designated person's e-mail.")
    ] = None,
) -> None:
    """Carry out a verified request."""
    changes = None
    if display_name is not None or notice_email is not None:
        fields = {"display_name": display_name, "notice_email": notice_email}
        changes = RectifyChanges(**{k: v for k, v in fields.items() if v is not None})
    body = RequestProcess(
        changes=changes,
        directive=DirectiveIn(action=directive, designated_contact=designated_contact)
        if directive
        else None,
    )
    _print(_with_runtime(lambda rt: rt.privacy.process_request(None, request_id, body)))


@request_app.command("refuse")
@_one_line_errors
def request_refuse(
    request_id: str, reason: Annotated[str, typer.Option(help="Why (naming no one).")]
) -> None:
    """Refuse a request, with the reason."""
    body = RequestRefuse(reason=reason)
    _print(_with_runtime(lambda rt: rt.privacy.refuse_request(None, request_id, body)))


@hold_app.command("place")
@_one_line_errors
def hold_place(
    account: Annotated[str, typer.Option(help="Account id.")],
    reason: Annotated[str, typer.Option(help="The order's reference.")],
) -> None:
    """Place a legal hold: no purge and no erasure of the subject until released."""
    body = HoldCreate(reason=reason)
    _print(_with_runtime(lambda rt: rt.privacy.place_hold(None, account, body)))


@hold_app.command("release")
@_one_line_errors
def hold_release(hold_id: str) -> None:
    """Release a legal hold."""
    _print(_with_runtime(lambda rt: rt.privacy.release_hold(None, hold_id)))


@hold_app.command("list")
@_one_line_errors
def hold_list(tenant: Annotated[str, typer.Option(help="Tenant id.")]) -> None:
    """A tenant's legal holds."""
    _print(_with_runtime(lambda rt: rt.privacy.list_holds(None, tenant)))


@policy_app.command("create")
@_one_line_errors
def policy_create(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    version: Annotated[str, typer.Option(help="Version label, e.g. 2027-01.")],
    summary: Annotated[str, typer.Option(help="What changes, for the notice.")],
    effective: Annotated[str, typer.Option(help="Effective date-time, ISO 8601 (UTC).")],
    changes_data_use: Annotated[bool, typer.Option("--changes-data-use/--editorial")] = True,
) -> None:
    """Record a policy version with its effective date."""
    body = PolicyCreate.model_validate(
        {
            "version": version,
            "summary": summary,
            "effective_at": effective,
            "changes_data_use": changes_data_use,
        }
    )
    _print(_with_runtime(lambda rt: rt.privacy.notices.create_policy(None, tenant, body)))


@policy_app.command("publish")
@_one_line_errors
def policy_publish(version_id: str) -> None:
    """Send the notices (in-app and e-mail) for a version, before it takes effect."""
    _print(_with_runtime(lambda rt: rt.privacy.notices.publish_policy(None, version_id)))


@disclosure_app.command("record")
@_one_line_errors
def disclosure_record(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    authority: Annotated[str, typer.Option()],
    legal_basis: Annotated[str, typer.Option()],
    scope: Annotated[str, typer.Option()],
    account: Annotated[list[str] | None, typer.Option(help="An affected account (repeat).")] = None,
) -> None:
    """Record a disclosure to an authority."""
    body = DisclosureCreate(
        authority=authority, legal_basis=legal_basis, scope=scope, account_ids=account or []
    )
    _print(_with_runtime(lambda rt: rt.privacy.notices.record_disclosure(None, tenant, body)))


@disclosure_app.command("notify")
@_one_line_errors
def disclosure_notify(disclosure_id: str) -> None:
    """Notify the affected users (all of the tenant's if the disclosure names none)."""
    _print(_with_runtime(lambda rt: rt.privacy.notices.notify_disclosure(None, disclosure_id)))
