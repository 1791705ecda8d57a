"""``copilot keys ...``: create, list, rotate and revoke LLM gateway API keys.

The commands work on the database directly (the owner URL: the configured
``COPILOT_DATABASE__URL`` or the embedded PostgreSQL), hash keys with
``COPILOT_GATEWAY__KEY_PEPPER`` exactly as the gateway does, and signal
rotations and revocations to running gateways through Redis. Without a
reachable Redis the change still holds: gateways notice it within their key
cache TTL (about 5 s) instead of about one second.

A plaintext key is printed once, by ``create`` and ``rotate``, and never
again. Expected failures print one line (``copilot: error: ...``) and exit 1.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.config import Settings, get_settings
from core.errors import CopilotError, ValidationFailedError

if TYPE_CHECKING:
    import redis

    from gateway.keys import ApiKeyRecord, KeyStore

app = typer.Typer(
    help="LLM gateway API keys: create, list, rotate, revoke (on the database directly).",
    no_args_is_help=True,
    add_completion=False,
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
SHOWN_ONCE = "store this key now (e.g. in a secret manager): it will not be shown again"

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


# --------------------------------------------------------------------------- parsing


def parse_duration(value: str, *, allow_zero: bool = False) -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w``, combinations (``1h30m``) or plain seconds.

    Raises:
        ValidationFailedError: Not a duration (or zero when not allowed).
    """
    text = value.strip().lower()
    if text.isdigit():
        seconds = int(text)
    elif text and _DURATION_RE.sub("", text) == "":
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION_RE.findall(text))
    else:
        raise ValidationFailedError(f"invalid duration {value!r}: use e.g. 90s, 15m, 12h, 30d or 1h30m")
    if seconds == 0 and not allow_zero:
        raise ValidationFailedError(f"invalid duration {value!r}: must be more than zero")
    return timedelta(seconds=seconds)


def _key_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise ValidationFailedError(f"{value!r} is not a key id (a UUID, as `copilot keys list` shows)") from None


def _csv(value: str | None, option: str) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ValidationFailedError(f"{option} needs at least one comma-separated value")
    return items


def _usd_micros(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        amount = Decimal(value.strip().removeprefix("$"))
    except InvalidOperation:
        raise ValidationFailedError(f"{option}: {value!r} is not an amount in USD") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationFailedError(f"{option}: {value!r} must be a non-negative amount in USD")
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_HALF_UP))


def _role(value: str) -> Any:
    from gateway.admin import parse_role

    try:
        return parse_role(value)
    except ValueError as exc:
        raise ValidationFailedError(str(exc)) from None


# --------------------------------------------------------------------------- plumbing


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Expected failures become ``copilot: error: ...`` and exit code 1, even when this sub-app runs alone."""
    try:
        yield
    except CopilotError as exc:
        print(f"copilot: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise typer.Exit(1) from None


def _warn(message: str) -> None:
    print(f"copilot: warning: {message}", file=sys.stderr)


def _redis_client(settings: Settings) -> redis.Redis | None:
    """A client on the gateways' Redis for the revocation signal, or None (with a warning) when none answers."""
    import redis

    from core.embedded import embedded_services
    from core.logging import redact

    if settings.redis.url is not None:
        url = settings.redis.url.get_secret_value()
    else:
        _, server = embedded_services(settings)
        if not server.status().running:
            _warn("embedded Redis is not running: gateways notice this change within their key cache TTL (~5 s)")
            return None
        url = server.url
    timeout = settings.redis.socket_timeout_s
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        client.close()
        _warn(f"cannot reach Redis at {redact(url)} ({exc}): gateways notice this change within their key cache TTL")
        return None
    return client


@contextmanager
def _key_store(*, signal: bool) -> Iterator[KeyStore]:
    """A key store on the owner database; with ``signal``, also on Redis for rotations and revocations."""
    from sqlalchemy import inspect

    from core.db import Database
    from core.embedded import resolve_services
    from gateway.keys import KeyStore

    settings = get_settings()
    urls = resolve_services(settings, start=True, redis=False)
    database = Database(urls.database_url, settings.database)
    redis_client = None
    try:
        database.check()
        if not inspect(database.admin_engine).has_table("api_keys"):
            raise CopilotError("the database has no api_keys table: run `copilot db migrate` first")
        redis_client = _redis_client(settings) if signal else None
        yield KeyStore(database.admin_engine, pepper=settings.gateway.key_pepper, redis_client=redis_client)
    finally:
        if redis_client is not None:
            redis_client.close()
        database.dispose()


def _record_json(record: ApiKeyRecord, **extra: Any) -> dict[str, Any]:
    from gateway.admin import KeyOut

    return {**KeyOut.from_record(record, datetime.now(UTC)).model_dump(mode="json"), **extra}


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _when(value: datetime | None, empty: str = "-") -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if value is not None else empty


def _utc(value: datetime | None) -> str:
    return " UTC" if value is not None else ""


# --------------------------------------------------------------------------- commands


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the service using the key.")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant owning the key.")],
    role: Annotated[
        str, typer.Option("--role", help="caller (model calls), viewer, tenant_admin (= key_manager) or admin.")
    ] = "caller",
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated models or patterns (default *).")
    ] = None,
    endpoints: Annotated[
        str | None, typer.Option("--endpoints", help="Comma-separated endpoints (chat, embeddings, models, admin:*).")
    ] = None,
    merchants: Annotated[str | None, typer.Option("--merchants", help="Comma-separated merchant ids.")] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute.")] = None,
    daily_budget_usd: Annotated[str | None, typer.Option("--daily-budget-usd", help="Spend per UTC day.")] = None,
    monthly_budget_usd: Annotated[
        str | None, typer.Option("--monthly-budget-usd", help="Spend per UTC calendar month.")
    ] = None,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Lifetime, e.g. 30d or 12h.")] = None,
    cache: Annotated[bool, typer.Option("--cache", help="Allow cached responses for this key.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once."""
    with _one_line_errors():
        scopes: dict[str, Any] = {}
        for field, value, option in (
            ("models", models, "--models"),
            ("endpoints", endpoints, "--endpoints"),
            ("merchants", merchants, "--merchants"),
        ):
            items = _csv(value, option)
            if items is not None:
                scopes[field] = items
        limits = {
            "rpm": rpm,
            "tpm": tpm,
            "daily_budget_micros": _usd_micros(daily_budget_usd, "--daily-budget-usd"),
            "monthly_budget_micros": _usd_micros(monthly_budget_usd, "--monthly-budget-usd"),
        }
        target_role = _role(role)
        lifetime = parse_duration(expires_in) if expires_in is not None else None
        with _key_store(signal=False) as store:
            expires_at = datetime.now(UTC) + lifetime if lifetime is not None else None
            record, plaintext = store.create(
                name,
                tenant,
                role=target_role,
                scopes=scopes,
                limits={k: v for k, v in limits.items() if v is not None},
                expires_at=expires_at,
                cache_enabled=cache,
            )
    if as_json:
        _print_json(_record_json(record, key=plaintext))
    else:
        typer.echo(
            f"created key {record.key_id} ({record.display_prefix}, role {record.role.value}) "
            f"for tenant {record.tenant_id}, expires {_when(record.expires_at, 'never')}{_utc(record.expires_at)}"
        )
        typer.echo(plaintext)
    _warn(SHOWN_ONCE)


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant (default: every tenant).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include revoked and expired keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List keys, oldest first (never their secrets)."""
    with _one_line_errors(), _key_store(signal=False) as store:
        records = store.list(tenant, include_inactive=show_all)
    if as_json:
        _print_json([_record_json(r) for r in records])
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)  # piped: whole rows, so ids can be grepped and copied
    table = Table(title=f"API keys{f' of {tenant}' if tenant else ''}{'' if show_all else ', active'} (times in UTC)")
    for column in ("id", "prefix", "name", "tenant", "role", "expires", "revoked", "last used"):
        table.add_column(column, no_wrap=column in ("id", "prefix"), overflow="fold")
    for r in records:
        table.add_row(
            str(r.key_id), r.display_prefix, r.name, r.tenant_id, r.role.value,
            _when(r.expires_at, "never"), _when(r.revoked_at), _when(r.last_used_at),
        )  # fmt: skip
    console.print(table)
    if not records:
        typer.echo("no keys" + ("" if show_all else " (add --all to include revoked and expired keys)"))


@app.command()
def rotate(
    key_id: Annotated[str, typer.Argument(help="The key to replace (its id).")],
    overlap: Annotated[str, typer.Option("--overlap", help="How long the old key keeps working (0 = now).")] = "1h",
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="The new key's lifetime (default: the old key's expiry).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a successor key (printed once); the old one works for the overlap, then stops."""
    with _one_line_errors():
        target = _key_id(key_id)
        window = parse_duration(overlap, allow_zero=True)
        lifetime = parse_duration(expires_in) if expires_in is not None else None
        with _key_store(signal=True) as store:
            kwargs: dict[str, Any] = {}
            if lifetime is not None:
                kwargs["expires_at"] = datetime.now(UTC) + lifetime
            record, plaintext = store.rotate(target, window, **kwargs)
            previous = store.get(target)
    if as_json:
        _print_json(_record_json(record, key=plaintext, previous=_record_json(previous)))
    else:
        typer.echo(
            f"rotated key {target} -> {record.key_id} ({record.display_prefix}); "
            f"the old key works until {_when(previous.expires_at)}{_utc(previous.expires_at)}"
        )
        typer.echo(plaintext)
    _warn(SHOWN_ONCE)


@app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key to revoke (its id).")],
    as_json: JsonOption = False,
) -> None:
    """Revoke a key now (idempotent); running gateways refuse it within about a second."""
    with _one_line_errors():
        target = _key_id(key_id)
        with _key_store(signal=True) as store:
            record = store.revoke(target)
    if as_json:
        _print_json(_record_json(record))
    else:
        typer.echo(
            f"revoked key {record.key_id} ({record.display_prefix}, {record.name}) at {_when(record.revoked_at)} UTC"
        )
