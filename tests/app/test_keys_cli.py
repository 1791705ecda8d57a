"""``copilot keys ...`` against the test database and Redis, through Typer's runner."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import Engine, text
from typer.testing import CliRunner, Result

from app.keys_cli import app, parse_duration
from core.config import get_settings
from core.errors import ValidationFailedError
from gateway.errors import InvalidApiKeyError
from gateway.keys import REVOCATION_EPOCH_KEY, AuthContext, KeyAuthenticator, KeyStore, Role, parse_key

PEPPER = "keys-cli-test-pepper"
runner = CliRunner()


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str, redis_client: redis.Redis
) -> Iterator[None]:
    monkeypatch.setenv("COPILOT_DATABASE__URL", database_url)
    monkeypatch.setenv("COPILOT_REDIS__URL", redis_url)
    monkeypatch.setenv("COPILOT_GATEWAY__KEY_PEPPER", PEPPER)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def tenant(admin_engine: Engine) -> Iterator[str]:
    tenant_id = f"cli-{uuid.uuid4().hex[:10]}"
    yield tenant_id
    with admin_engine.begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE tenant_id = :t"), {"t": tenant_id})


@pytest.fixture
def store(admin_engine: Engine) -> KeyStore:
    """How the gateway sees the keys: the same database and pepper."""
    return KeyStore(admin_engine, pepper=SecretStr(PEPPER))


def keys(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ok_json(*args: str) -> Any:
    result = keys(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def authenticate(store: KeyStore, key: str) -> AuthContext | InvalidApiKeyError:
    async def main() -> AuthContext | InvalidApiKeyError:
        auth = KeyAuthenticator(store)
        try:
            return await auth.authenticate(key)
        except InvalidApiKeyError as exc:
            return exc
        finally:
            await auth.aclose()

    return asyncio.run(main())


def test_create_prints_a_key_that_authenticates(cli_env: None, store: KeyStore, tenant: str) -> None:
    before = datetime.now(UTC)
    created = ok_json(
        "create", "--name", "orchestrator", "--tenant", tenant, "--models", "gpt-4o-mini, openai/*",
        "--merchants", "m-1,m-2", "--rpm", "60", "--tpm", "10000", "--daily-budget-usd", "2.5",
        "--monthly-budget-usd", "$40", "--expires-in", "30d", "--cache",
    )  # fmt: skip
    assert {"key_id", "key", "prefix", "tenant_id", "role"} <= set(created)
    assert (created["tenant_id"], created["role"], created["cache_enabled"]) == (tenant, "caller", True)
    assert created["prefix"] == f"cpk_{parse_key(created['key']).prefix}"

    ctx = authenticate(store, created["key"])
    assert isinstance(ctx, AuthContext)
    assert str(ctx.key_id) == created["key_id"] and ctx.tenant_id == tenant and ctx.role is Role.CALLER
    assert ctx.scopes.models == ("gpt-4o-mini", "openai/*") and ctx.scopes.merchants == ("m-1", "m-2")
    assert (ctx.limits.rpm, ctx.limits.tpm) == (60, 10000)
    assert (ctx.limits.daily_budget_micros, ctx.limits.monthly_budget_micros) == (2_500_000, 40_000_000)
    record = store.get(ctx.key_id)
    assert record.expires_at is not None
    assert before + timedelta(days=30) <= record.expires_at <= datetime.now(UTC) + timedelta(days=30)
    # The hash was made with the configured pepper: a store without it refuses the key.
    assert isinstance(authenticate(KeyStore(store._engine), created["key"]), InvalidApiKeyError)


def test_create_text_output_shows_the_key_once_with_a_warning(cli_env: None, store: KeyStore, tenant: str) -> None:
    result = keys("create", "--name", "ops", "--tenant", tenant, "--role", "tenant_admin")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and "role key_manager" in lines[0] and "expires never" in lines[0]
    plaintext = lines[1]
    ctx = authenticate(store, plaintext)
    assert isinstance(ctx, AuthContext) and ctx.role is Role.KEY_MANAGER
    assert (
        result.stderr.strip()
        == "copilot: warning: store this key now (e.g. in a secret manager): it will not be shown again"
    )


def test_list_shows_keys_without_secrets(cli_env: None, store: KeyStore, tenant: str) -> None:
    first = ok_json("create", "--name", "svc-a", "--tenant", tenant)
    second = ok_json("create", "--name", "svc-b", "--tenant", tenant, "--role", "viewer")
    store.revoke(uuid.UUID(second["key_id"]))

    listed = ok_json("list", "--tenant", tenant)
    assert [k["key_id"] for k in listed] == [first["key_id"]]
    everything = ok_json("list", "--tenant", tenant, "--all")
    assert [(k["name"], k["active"]) for k in everything] == [("svc-a", True), ("svc-b", False)]
    assert everything[1]["revoked_at"] is not None

    table = keys("list", "--tenant", tenant, "--all")
    assert table.exit_code == 0, table.output
    assert first["prefix"] in table.stdout and "svc-b" in table.stdout
    for created in (first, second):
        assert created["key"] not in table.stdout and parse_key(created["key"]).secret not in table.stdout
        assert created["key"] not in json.dumps(everything)
    assert all("key" not in k and "key_hash" not in k for k in everything)


def test_rotate_gives_a_working_successor_and_keeps_the_old_key_for_the_overlap(
    cli_env: None, store: KeyStore, tenant: str, redis_client: redis.Redis
) -> None:
    old = ok_json("create", "--name", "svc", "--tenant", tenant, "--rpm", "5")
    epoch = redis_client.get(REVOCATION_EPOCH_KEY)
    started = datetime.now(UTC)
    rotated = ok_json("rotate", old["key_id"], "--overlap", "2h")
    assert redis_client.get(REVOCATION_EPOCH_KEY) != epoch  # running gateways were told
    assert rotated["rotated_from"] == old["key_id"] and rotated["key"] != old["key"]
    assert rotated["limits"]["rpm"] == 5 and rotated["previous"]["key_id"] == old["key_id"]
    old_expiry = datetime.fromisoformat(rotated["previous"]["expires_at"])
    assert started + timedelta(hours=2) <= old_expiry <= datetime.now(UTC) + timedelta(hours=2)

    new_ctx, old_ctx = authenticate(store, rotated["key"]), authenticate(store, old["key"])
    assert isinstance(new_ctx, AuthContext) and isinstance(old_ctx, AuthContext)
    assert new_ctx.lineage_id == old_ctx.key_id

    # --overlap 0 cuts the rotated key off at once; text output shows the new key once.
    result = keys("rotate", rotated["key_id"], "--overlap", "0", "--expires-in", "12h")
    assert result.exit_code == 0, result.output
    newest = result.stdout.strip().splitlines()[-1]
    assert isinstance(authenticate(store, newest), AuthContext)
    assert isinstance(authenticate(store, rotated["key"]), InvalidApiKeyError)
    assert "it will not be shown again" in result.stderr


def test_revoke_makes_the_key_fail_authentication(
    cli_env: None, store: KeyStore, tenant: str, redis_client: redis.Redis
) -> None:
    created = ok_json("create", "--name", "svc", "--tenant", tenant)
    assert isinstance(authenticate(store, created["key"]), AuthContext)
    epoch = redis_client.get(REVOCATION_EPOCH_KEY)

    revoked = ok_json("revoke", created["key_id"])
    assert revoked["revoked_at"] is not None and revoked["active"] is False
    assert redis_client.get(REVOCATION_EPOCH_KEY) != epoch
    refused = authenticate(store, created["key"])
    assert isinstance(refused, InvalidApiKeyError) and "revoked" in str(refused)

    again = keys("revoke", created["key_id"])  # idempotent
    assert again.exit_code == 0 and created["key_id"] in again.stdout


def test_revoke_without_redis_still_revokes_and_warns(
    monkeypatch: pytest.MonkeyPatch, cli_env: None, store: KeyStore, tenant: str
) -> None:
    created = ok_json("create", "--name", "svc", "--tenant", tenant)
    monkeypatch.setenv("COPILOT_REDIS__URL", "unix:///nonexistent/redis.sock")
    monkeypatch.setenv("COPILOT_REDIS__SOCKET_TIMEOUT_S", "0.5")
    get_settings.cache_clear()
    result = keys("revoke", created["key_id"])
    assert result.exit_code == 0, result.output
    assert "copilot: warning: cannot reach Redis" in result.stderr
    assert isinstance(authenticate(store, created["key"]), InvalidApiKeyError)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("create", "--name", "x", "--tenant", "{tenant}", "--role", "superuser"), "unknown role 'superuser'"),
        (("create", "--name", "x", "--tenant", "{tenant}", "--expires-in", "3 fortnights"), "invalid duration"),
        (("create", "--name", "x", "--tenant", "{tenant}", "--expires-in", "0d"), "must be more than zero"),
        (("create", "--name", "x", "--tenant", "{tenant}", "--rpm", "-1"), "invalid key settings"),
        (("create", "--name", "x", "--tenant", "{tenant}", "--daily-budget-usd", "lots"), "not an amount in USD"),
        (("create", "--name", "x", "--tenant", "{tenant}", "--models", " , "), "--models needs at least one"),
        (("create", "--name", " ", "--tenant", "{tenant}"), "a key needs a name"),
        (("create", "--name", "x", "--tenant", "t" * 65), "tenant_id must be 1 to 64 characters"),
        (("rotate", "not-a-uuid"), "'not-a-uuid' is not a key id"),
        (("rotate", "{unknown}"), "not found"),
        (("rotate", "{unknown}", "--overlap", "soon"), "invalid duration 'soon'"),
        (("revoke", "{unknown}"), "not found"),
        (("revoke", "12345"), "is not a key id"),
    ],
)
def test_expected_failures_are_one_line(
    cli_env: None, store: KeyStore, tenant: str, args: tuple[str, ...], needle: str
) -> None:
    unknown = str(uuid.uuid4())
    result = keys(*(a.format(tenant=tenant, unknown=unknown) for a in args))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("copilot: error: ") and needle in lines[0], result.stderr
    assert result.stdout == ""
    assert store.list(tenant) == []


def test_rotating_a_revoked_key_is_an_error(cli_env: None, tenant: str) -> None:
    created = ok_json("create", "--name", "svc", "--tenant", tenant)
    assert keys("revoke", created["key_id"]).exit_code == 0
    result = keys("rotate", created["key_id"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "copilot: error: only an active key can be rotated"


def test_unmigrated_database_is_one_line(monkeypatch: pytest.MonkeyPatch, pg_server_url: str, redis_url: str) -> None:
    from core.db.admin import create_database, drop_database

    name = f"keys_cli_empty_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server_url, name)
    try:
        monkeypatch.setenv("COPILOT_DATABASE__URL", url)
        monkeypatch.setenv("COPILOT_REDIS__URL", redis_url)
        get_settings.cache_clear()
        result = keys("list")
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            "copilot: error: the database has no api_keys table: run `copilot db migrate` first"
        )
    finally:
        get_settings.cache_clear()
        drop_database(pg_server_url, name)


@pytest.mark.parametrize(
    ("text_value", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43_200), ("30d", 2_592_000), ("2w", 1_209_600), ("1h30m", 5400), ("45", 45)],
)
def test_durations(text_value: str, seconds: int) -> None:
    assert parse_duration(text_value) == timedelta(seconds=seconds)


def test_bad_durations() -> None:
    for bad in ("", "h", "1.5h", "-1h", "1y", "1h 30m x"):
        with pytest.raises(ValidationFailedError):
            parse_duration(bad)
    assert parse_duration("0", allow_zero=True) == timedelta(0)
