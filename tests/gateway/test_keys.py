"""Virtual keys: format, hashing, storage, authentication, expiry, rotation, revocation, scopes, RBAC."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text

from core.errors import NotFoundError, ServiceUnavailableError, ValidationFailedError
from gateway.errors import InvalidApiKeyError, PermissionDeniedError
from gateway.keys import (
    REVOCATION_EPOCH_KEY,
    Action,
    AuthContext,
    KeyAuthenticator,
    KeyStore,
    Role,
    Scopes,
    _checksum,
    allowed_models,
    authorize,
    generate_key,
    hash_key,
    key_from_authorization,
    parse_key,
    require,
    require_grant,
    verify_key,
)
from tests.gateway.conftest import ManualClock, make_ctx

# --------------------------------------------------------------------------- format


def test_generated_keys_parse_and_are_unique() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k.plaintext for k in keys}) == 200
    for key in keys[:20]:
        assert key.plaintext.startswith(f"cpk_{key.prefix}_")
        assert parse_key(key.plaintext) == key
        assert key.secret not in repr(key)


def test_every_single_character_typo_is_rejected_by_the_checksum() -> None:
    key = generate_key().plaintext
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    body_start = len("cpk_")
    for position in range(body_start, len(key)):
        if key[position] == "_":
            continue
        replacement = alphabet[(alphabet.index(key[position]) + 7) % 62]
        typo = key[:position] + replacement + key[position + 1 :]
        with pytest.raises(InvalidApiKeyError, match="checksum"):
            parse_key(typo)
    # Two adjacent characters swapped.
    swapped = key[:10] + key[11] + key[10] + key[12:]
    if swapped != key:
        with pytest.raises(InvalidApiKeyError):
            parse_key(swapped)


@pytest.mark.parametrize(
    "bad",
    ["", "sk-abc", "cpk_short_x_y", "cpk_ABCDEFGH_" + "a" * 31 + "_AAAAAA", "xyz_ABCDEFGH_" + "a" * 32 + "_AAAAAA"],
)
def test_malformed_keys_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidApiKeyError) as info:
        parse_key(bad)
    assert info.value.status == 401
    assert info.value.to_openai()["error"]["code"] == "invalid_api_key"


def test_authorization_header_parsing() -> None:
    assert key_from_authorization("Bearer cpk_x") == "cpk_x"
    assert key_from_authorization("bearer  cpk_x ") == "cpk_x"
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(InvalidApiKeyError):
            key_from_authorization(header)


def test_hash_with_and_without_pepper_and_constant_time_verify() -> None:
    key = generate_key().plaintext
    plain = hash_key(key)
    peppered = hash_key(key, SecretStr("pepper-1"))
    assert plain.startswith("sha256$") and peppered.startswith("hmac-sha256$")
    assert key not in plain and key not in peppered
    assert verify_key(key, plain) and verify_key(key, peppered, SecretStr("pepper-1"))
    assert not verify_key(key, peppered, SecretStr("pepper-2"))
    assert not verify_key(key, peppered, None)
    assert not verify_key(generate_key().plaintext, plain)
    assert not verify_key(key, "md5$" + "0" * 32)


# --------------------------------------------------------------------------- store


def test_create_stores_only_the_hash(store: KeyStore, tenant: str, admin_engine: Engine) -> None:
    record, plaintext = store.create("orchestrator", tenant, scopes={"models": ["gpt-4o-mini"]}, limits={"rpm": 60})
    secret = parse_key(plaintext).secret
    assert plaintext.startswith(f"{record.display_prefix}_")
    with admin_engine.connect() as conn:
        row_json = conn.execute(
            text("SELECT row_to_json(k)::text FROM api_keys AS k WHERE key_id = :id"), {"id": record.key_id}
        ).scalar_one()
        stored_hash = conn.execute(
            text("SELECT key_hash FROM api_keys WHERE key_id = :id"), {"id": record.key_id}
        ).scalar_one()
    assert secret not in row_json and plaintext not in row_json
    assert stored_hash == hash_key(plaintext)
    assert "key_hash" not in record.__dataclass_fields__
    assert record.scopes.models == ("gpt-4o-mini",) and record.limits.rpm == 60
    assert store.get(record.key_id) == record


def test_create_validates_its_input(store: KeyStore, tenant: str, key_clock: ManualClock) -> None:
    with pytest.raises(ValidationFailedError):
        store.create("k", tenant, role="superuser")
    with pytest.raises(ValidationFailedError):
        store.create("k", tenant, limits={"rmp": 10})  # typo'd field
    with pytest.raises(ValidationFailedError):
        store.create("k", tenant, limits={"rpm": -1})
    with pytest.raises(ValidationFailedError):
        store.create("k", tenant, expires_at=key_clock.now - timedelta(seconds=1))
    with pytest.raises(ValidationFailedError):
        store.create(" ", tenant)
    with pytest.raises(ValidationFailedError):
        store.create("k", "t" * 65)


def test_list_and_get(store: KeyStore, tenant: str, key_clock: ManualClock, admin_engine: Engine) -> None:
    first, _ = store.create("one", tenant)
    key_clock.advance(seconds=1)
    second, _ = store.create("two", tenant, role=Role.VIEWER)
    other_tenant, _ = store.create("elsewhere", f"{tenant}-other")
    try:
        assert [r.key_id for r in store.list(tenant)] == [first.key_id, second.key_id]
        all_ids = {r.key_id for r in store.list()}
        assert {first.key_id, second.key_id, other_tenant.key_id} <= all_ids
        store.revoke(first.key_id)
        assert [r.key_id for r in store.list(tenant, include_inactive=False)] == [second.key_id]
    finally:
        store.revoke(other_tenant.key_id)
        with admin_engine.begin() as conn:  # the other tenant's row is ours to clean
            conn.execute(text("DELETE FROM api_keys WHERE key_id = :id"), {"id": other_tenant.key_id})
    with pytest.raises(NotFoundError):
        store.get(uuid.uuid4())
    with pytest.raises(NotFoundError):
        store.revoke(uuid.uuid4())
    with pytest.raises(NotFoundError):
        store.rotate(uuid.uuid4())


# --------------------------------------------------------------------------- authentication


def _authenticate(authenticator_kwargs: dict[str, Any], store: KeyStore, *keys: str | None) -> list[Any]:
    """Authenticate each key with one authenticator; return contexts or the errors raised."""

    async def main() -> list[Any]:
        auth = KeyAuthenticator(store, **authenticator_kwargs)
        out: list[Any] = []
        for key in keys:
            try:
                out.append(await auth.authenticate(key))
            except (InvalidApiKeyError, ServiceUnavailableError) as exc:
                out.append(exc)
        await auth.aclose()
        return out

    return asyncio.run(main())


def test_authenticate_returns_the_context(store: KeyStore, tenant: str) -> None:
    record, plaintext = store.create(
        "svc", tenant, role="caller", scopes={"models": ["*"]}, limits={"tpm": 1000}, cache_enabled=True
    )
    [ctx] = _authenticate({}, store, plaintext)
    assert isinstance(ctx, AuthContext)
    assert (ctx.key_id, ctx.lineage_id, ctx.tenant_id, ctx.role) == (record.key_id, record.key_id, tenant, Role.CALLER)
    assert ctx.limits.tpm == 1000 and ctx.cache_enabled is True and ctx.prefix == record.prefix


def test_auth_failures(store: KeyStore, tenant: str) -> None:
    _, plaintext = store.create("svc", tenant)
    unknown = generate_key().plaintext  # well formed, valid checksum, not in the database
    # Same prefix, other secret: a valid checksum but the wrong hash.
    forged_body = f"cpk_{parse_key(plaintext).prefix}_{generate_key().secret}"
    forged = f"{forged_body}_{_checksum(forged_body)}"
    typo = plaintext[:-1] + ("0" if plaintext[-1] != "0" else "1")
    results = _authenticate({}, store, None, "", "Bearer x", unknown, forged, typo)
    assert all(isinstance(r, InvalidApiKeyError) for r in results)
    assert "Missing" in str(results[0]) and "Malformed" in str(results[2])
    assert str(results[3]) == str(results[4]) == "Incorrect API key provided."


def test_a_verified_key_is_remembered_by_digest_and_still_checked(
    store: KeyStore, tenant: str, key_clock: ManualClock
) -> None:
    _, plaintext = store.create("svc", tenant, expires_at=key_clock.now + timedelta(hours=1))
    forged_body = f"cpk_{parse_key(plaintext).prefix}_{generate_key().secret}"
    forged = f"{forged_body}_{_checksum(forged_body)}"

    async def main() -> list[Any]:
        auth = KeyAuthenticator(store, clock=key_clock, cache_ttl_s=300)
        seen: list[Any] = []
        for key in (plaintext, plaintext, forged, plaintext):
            try:
                seen.append(await auth.authenticate(key))
            except InvalidApiKeyError as exc:
                seen.append(exc)
        assert all(isinstance(d, bytes) and len(d) == 16 for d in auth._verified)  # digests, no plaintext
        assert plaintext not in repr(auth._verified)
        key_clock.advance(hours=1)
        try:
            seen.append(await auth.authenticate(plaintext))  # remembered, but expired now
        except InvalidApiKeyError as exc:
            seen.append(exc)
        await auth.aclose()
        return seen

    first, again, forged_result, third, expired = asyncio.run(main())
    assert isinstance(first, AuthContext) and again is first and third is first
    assert isinstance(forged_result, InvalidApiKeyError)
    assert isinstance(expired, InvalidApiKeyError) and "expired" in str(expired)


def test_typos_are_rejected_without_a_database(tenant: str) -> None:
    # An engine on a server that does not exist: any lookup would fail with 503.
    dead = create_engine("postgresql+psycopg://nobody@/nothing?host=/nonexistent-socket-dir", pool_pre_ping=False)
    store = KeyStore(dead)
    key = generate_key().plaintext
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    typo_result, good_format_result = _authenticate({}, store, typo, key)
    assert isinstance(typo_result, InvalidApiKeyError)
    assert isinstance(good_format_result, ServiceUnavailableError)
    dead.dispose()


def test_peppered_store(admin_engine: Engine, tenant: str, redis_client: redis.Redis) -> None:
    store = KeyStore(admin_engine, pepper=SecretStr("s3cret-pepper"))
    record, plaintext = store.create("svc", tenant)
    assert store.find_by_prefix(record.prefix).key_hash.startswith("hmac-sha256$")  # type: ignore[union-attr]
    [ok] = _authenticate({}, store, plaintext)
    assert isinstance(ok, AuthContext)
    wrong_pepper = KeyStore(admin_engine, pepper=SecretStr("another"))
    [refused] = _authenticate({}, wrong_pepper, plaintext)
    assert isinstance(refused, InvalidApiKeyError)


def test_expiry(store: KeyStore, tenant: str, key_clock: ManualClock) -> None:
    _, plaintext = store.create("temp", tenant, expires_at=key_clock.now + timedelta(hours=1))
    [ok] = _authenticate({"clock": key_clock}, store, plaintext)
    assert isinstance(ok, AuthContext)
    key_clock.advance(hours=1)
    [expired] = _authenticate({"clock": key_clock}, store, plaintext)
    assert isinstance(expired, InvalidApiKeyError) and "expired" in str(expired)


def test_rotation_overlap_window(store: KeyStore, tenant: str, key_clock: ManualClock) -> None:
    old, old_key = store.create("svc", tenant, role="viewer", scopes={"models": ["a"]}, limits={"rpm": 5})
    new, new_key = store.rotate(old.key_id, overlap=timedelta(minutes=10))
    assert new.rotated_from == old.key_id and new_key != old_key
    assert (new.name, new.role, new.scopes, new.limits, new.expires_at) == (
        old.name,
        old.role,
        old.scopes,
        old.limits,
        None,
    )
    assert store.get(old.key_id).expires_at == key_clock.now + timedelta(minutes=10)

    async def main() -> list[Any]:
        auth = KeyAuthenticator(store, clock=key_clock)
        seen: list[Any] = []
        for minutes in (0, 9, 11):
            key_clock.now = new.created_at + timedelta(minutes=minutes)
            for key in (old_key, new_key):
                try:
                    seen.append(await auth.authenticate(key))
                except InvalidApiKeyError as exc:
                    seen.append(exc)
        return seen

    results = asyncio.run(main())
    old_0, new_0, old_9, new_9, old_11, new_11 = results
    assert all(isinstance(r, AuthContext) for r in (old_0, new_0, old_9, new_9, new_11))
    assert isinstance(old_11, InvalidApiKeyError) and "rotated" in str(old_11)
    # Rate limits follow the key across the rotation.
    assert new_0.lineage_id == old_0.lineage_id == old.key_id

    key_clock.now = new.created_at + timedelta(minutes=1)  # old key still inside its overlap
    with pytest.raises(ValidationFailedError, match="already rotated"):
        store.rotate(old.key_id)
    newer, _ = store.rotate(new.key_id, overlap=timedelta(0))
    stored = store.find_by_prefix(newer.prefix)
    assert stored is not None and stored.lineage_id == old.key_id


def test_rotation_keeps_or_sets_the_successor_expiry(store: KeyStore, tenant: str, key_clock: ManualClock) -> None:
    expiry = key_clock.now + timedelta(days=30)
    old, _ = store.create("svc", tenant, expires_at=expiry)
    kept, _ = store.rotate(old.key_id, overlap=timedelta(hours=1))
    assert kept.expires_at == expiry
    assert store.get(old.key_id).expires_at == key_clock.now + timedelta(hours=1)
    cleared, _ = store.rotate(kept.key_id, overlap=timedelta(0), expires_at=None)
    assert cleared.expires_at is None
    revoked, _ = store.create("gone", tenant)
    store.revoke(revoked.key_id)
    with pytest.raises(ValidationFailedError):
        store.rotate(revoked.key_id)
    with pytest.raises(ValidationFailedError):
        store.rotate(kept.key_id, overlap=timedelta(seconds=-1))


def test_revocation_is_immediate_in_process_and_signalled(
    store: KeyStore, tenant: str, redis_client: redis.Redis, redis_url: str
) -> None:
    record, plaintext = store.create("svc", tenant)

    async def main() -> tuple[Any, Any, Any]:
        client = redis.asyncio.Redis.from_url(redis_url)
        # A long cache TTL: only the Redis signal can make the revocation visible.
        auth = KeyAuthenticator(store, client, cache_ttl_s=300, signal_poll_s=0)
        before = await auth.authenticate(plaintext)
        epoch = redis_client.get(REVOCATION_EPOCH_KEY)
        await asyncio.to_thread(store.revoke, record.key_id)
        assert redis_client.get(REVOCATION_EPOCH_KEY) != epoch
        try:
            after: Any = await auth.authenticate(plaintext)
        except InvalidApiKeyError as exc:
            after = exc
        # Without the signal the cached entry would still be served:
        blind = KeyAuthenticator(store, None, cache_ttl_s=300)
        _, second = store.create("svc2", tenant)
        await blind.authenticate(second)
        store.revoke(store.find_by_prefix(parse_key(second).prefix).record.key_id)  # type: ignore[union-attr]
        stale = await blind.authenticate(second)
        await client.aclose()
        return before, after, stale

    before, after, stale = asyncio.run(main())
    assert isinstance(before, AuthContext)
    assert isinstance(after, InvalidApiKeyError) and "revoked" in str(after)
    assert isinstance(stale, AuthContext)  # documents why the signal exists
    assert store.revoke(record.key_id).revoked_at == store.get(record.key_id).revoked_at  # idempotent


def test_authenticator_survives_an_unreachable_signal(store: KeyStore, tenant: str) -> None:
    _, plaintext = store.create("svc", tenant)

    async def main() -> Any:
        dead = redis.asyncio.Redis(unix_socket_path="/nonexistent/redis.sock")
        auth = KeyAuthenticator(store, dead, cache_ttl_s=0.0)
        ctx = await auth.authenticate(plaintext)
        await dead.aclose()
        return ctx

    assert isinstance(asyncio.run(main()), AuthContext)


def test_concurrent_cold_lookups_and_last_used(store: KeyStore, tenant: str, key_clock: ManualClock) -> None:
    record, plaintext = store.create("svc", tenant)
    assert record.last_used_at is None

    async def main() -> list[AuthContext]:
        auth = KeyAuthenticator(store, clock=key_clock, touch_interval_s=3600)
        contexts = await asyncio.gather(*(auth.authenticate(plaintext) for _ in range(20)))
        assert store.get(record.key_id).last_used_at is None  # batched, not written per request
        await auth.aclose()
        return contexts

    contexts = asyncio.run(main())
    assert {c.key_id for c in contexts} == {record.key_id}
    assert store.get(record.key_id).last_used_at == key_clock.now
    # A later flush never moves the time back.
    store.touch({record.key_id: key_clock.now - timedelta(days=1)})
    assert store.get(record.key_id).last_used_at == key_clock.now


# --------------------------------------------------------------------------- scopes


def test_scope_denials_for_models_endpoints_and_merchants() -> None:
    ctx = make_ctx(scopes=Scopes(models=("gpt-4o-mini", "openai/*"), endpoints=("chat", "models"), merchants=("m1",)))
    authorize(ctx, "chat", "gpt-4o-mini", merchant_id="m1")
    authorize(ctx, "chat", "openai/gpt-5")
    authorize(ctx, "models")
    with pytest.raises(PermissionDeniedError) as model_denied:
        authorize(ctx, "chat", "claude-3")
    assert model_denied.value.status == 403 and model_denied.value.param == "model"
    assert model_denied.value.to_openai()["error"]["type"] == "permission_error"
    with pytest.raises(PermissionDeniedError, match="embeddings"):
        authorize(ctx, "embeddings", "gpt-4o-mini")
    with pytest.raises(PermissionDeniedError, match="merchant"):
        authorize(ctx, "chat", "gpt-4o-mini", merchant_id="m2")
    assert allowed_models(ctx, ["gpt-4o-mini", "claude-3", "openai/o1"]) == ["gpt-4o-mini", "openai/o1"]

    anything = make_ctx()
    authorize(anything, "embeddings", "whatever", merchant_id="any")
    admin_scope = make_ctx(role=Role.ADMIN, scopes=Scopes(endpoints=("admin:*",)))
    authorize(admin_scope, "admin:keys")
    with pytest.raises(PermissionDeniedError):
        authorize(admin_scope, "chat", "gpt-4o-mini")


@pytest.mark.parametrize("role", list(Role))
def test_only_roles_that_call_models_can_call_models(role: Role) -> None:
    ctx = make_ctx(role=role)
    if role in (Role.ADMIN, Role.CALLER):
        authorize(ctx, "chat", "m")
    else:
        with pytest.raises(PermissionDeniedError, match="cannot call"):
            authorize(ctx, "chat", "m")


# --------------------------------------------------------------------------- RBAC

_MATRIX: dict[Role, set[Action]] = {
    Role.ADMIN: set(Action),
    Role.KEY_MANAGER: {Action.KEYS_CREATE, Action.KEYS_READ, Action.KEYS_ROTATE, Action.KEYS_REVOKE, Action.USAGE_READ},
    Role.VIEWER: {Action.KEYS_READ, Action.USAGE_READ},
    Role.CALLER: {Action.CALL_MODELS},
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
def test_rbac_matrix(role: Role, action: Action) -> None:
    ctx = make_ctx("tenant-a", role=role)
    if action in _MATRIX[role]:
        require(ctx, action, "tenant-a")
    else:
        with pytest.raises(PermissionDeniedError):
            require(ctx, action, "tenant-a")
    # Other tenants, or all tenants at once, are for admins only.
    for target in ("tenant-b", None):
        if role is Role.ADMIN:
            require(ctx, action, target)
        else:
            with pytest.raises(PermissionDeniedError):
                require(ctx, action, target)


def test_roles_cannot_grant_more_than_they_have() -> None:
    grants = {
        Role.ADMIN: set(Role),
        Role.KEY_MANAGER: {Role.KEY_MANAGER, Role.VIEWER, Role.CALLER},
        Role.VIEWER: set(),
        Role.CALLER: set(),
    }
    for granter, allowed in grants.items():
        for target in Role:
            if target in allowed:
                require_grant(make_ctx(role=granter), target)
            else:
                with pytest.raises(PermissionDeniedError):
                    require_grant(make_ctx(role=granter), target)
    with pytest.raises(PermissionDeniedError):
        require_grant(make_ctx(role=Role.ADMIN), "root")
