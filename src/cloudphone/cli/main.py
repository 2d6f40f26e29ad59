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
for sub, name in (
    (db_app, "db"),
    (config_app, "config"),
    (tenant_app, "tenant"),
    (account_app, "account"),
    (device_app, "device"),
    (token_app, "token"),
    (privacy_app, "privacy"),
    (provision_app, "provision"),
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
    try:
        defaults = FeatureConfig.model_validate_json(features)
    except ValidationError:
        raise
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
