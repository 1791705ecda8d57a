"""The key administration API over real HTTP (ASGI), a real KeyStore on PostgreSQL and a real authenticator on Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from fastapi import FastAPI, Request
from pydantic import SecretStr
from sqlalchemy import Engine

from gateway.admin import build_admin_router
from gateway.keys import KeyAuthenticator, KeyStore, Role, parse_key

BOOTSTRAP = "bootstrap-admin-token-for-tests"
BOOTSTRAP_SECRET = SecretStr(BOOTSTRAP)
PEPPER = SecretStr("admin-api-test-pepper")

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


@pytest.fixture
def key_store(admin_engine: Engine, redis_client: redis.Redis) -> KeyStore:
    """A store on the real clock (the authenticator checks expiry on the real clock too)."""
    return KeyStore(admin_engine, pepper=PEPPER, redis_client=redis_client)


@asynccontextmanager
async def gateway_client(
    store: KeyStore, redis_url: str, *, bootstrap: SecretStr | None = BOOTSTRAP_SECRET
) -> AsyncIterator[httpx.AsyncClient]:
    """A minimal gateway app: the admin router plus a model-ish route, both on one real authenticator."""
    redis_async = redis.asyncio.Redis.from_url(redis_url)
    # signal_poll_s=0: every request reads the revocation epoch, so revocations are visible at once.
    authenticator = KeyAuthenticator(store, redis_async, signal_poll_s=0)

    async def authenticate(request: Request) -> Any:
        return await authenticator.authenticate_header(request.headers.get("authorization"))

    app = FastAPI()
    app.include_router(build_admin_router(store, authenticate, bootstrap_token=bootstrap))

    @app.get("/v1/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        ctx = await authenticate(request)  # an auth failure is a 500 here: tests read it as "refused"
        return {"key_id": str(ctx.key_id), "lineage_id": str(ctx.lineage_id)}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
    await authenticator.aclose()
    await redis_async.aclose()


def run(store: KeyStore, redis_url: str, scenario: Scenario, **kwargs: Any) -> None:
    async def main() -> None:
        async with gateway_client(store, redis_url, **kwargs) as client:
            await scenario(client)

    asyncio.run(main())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    assert response.headers["cache-control"] == "no-store"
    return dict(error)


async def works(client: httpx.AsyncClient, key: str) -> bool:
    response = await client.get("/v1/whoami", headers=bearer(key))
    return response.status_code == 200


# --------------------------------------------------------------------------- bootstrap and creation


def test_bootstrap_token_creates_the_first_admin(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        created = await client.post(
            "/admin/keys", headers=bearer(BOOTSTRAP), json={"name": "first admin", "tenant_id": tenant, "role": "admin"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        body = created.json()
        key = body["key"]
        assert parse_key(key).prefix == body["prefix"].removeprefix("cpk_")
        assert (body["role"], body["tenant_id"], body["active"], body["revoked_at"]) == ("admin", tenant, True, None)
        assert key_store.get(uuid.UUID(body["key_id"])).role is Role.ADMIN

        # The new admin key administers every tenant, and is shown without secrets.
        listed = await client.get("/admin/keys", params={"tenant_id": tenant}, headers=bearer(key))
        assert listed.status_code == 200
        assert [k["key_id"] for k in listed.json()["data"]] == [body["key_id"]]
        assert key not in listed.text and parse_key(key).secret not in listed.text
        assert "key" not in listed.json()["data"][0] and "key_hash" not in listed.text

        # A wrong bootstrap token is just an invalid key.
        wrong = await client.post(
            "/admin/keys", headers=bearer(BOOTSTRAP + "x"), json={"name": "x", "tenant_id": tenant, "role": "admin"}
        )
        assert_openai_error(wrong, 401, "invalid_api_key")

    run(key_store, redis_url, scenario)


def test_without_a_configured_bootstrap_token_there_is_no_bootstrap(
    key_store: KeyStore, redis_url: str, tenant: str
) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        for token in (BOOTSTRAP, ""):
            response = await client.post(
                "/admin/keys", headers=bearer(token), json={"name": "x", "tenant_id": tenant, "role": "admin"}
            )
            assert_openai_error(response, 401, "invalid_api_key")

    run(key_store, redis_url, scenario, bootstrap=None)
    run(key_store, redis_url, scenario, bootstrap=SecretStr(""))
    assert key_store.list(tenant) == []


def test_admin_creates_tenant_admin_and_caller_keys(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    _, admin_key = key_store.create("ops", tenant, role=Role.ADMIN)

    async def scenario(client: httpx.AsyncClient) -> None:
        manager = await client.post(
            "/admin/keys",
            headers=bearer(admin_key),
            json={"name": "acme admin", "tenant_id": tenant, "role": "tenant_admin"},
        )
        assert manager.status_code == 201, manager.text
        assert manager.json()["role"] == "key_manager"

        before = datetime.now(UTC)
        caller = await client.post(
            "/admin/keys",
            headers=bearer(admin_key),
            json={
                "name": "orchestrator",
                "tenant_id": tenant,
                "scopes": {"models": ["gpt-4o-mini"], "merchants": ["m-1"]},
                "limits": {"rpm": 60, "daily_budget_micros": 5_000_000, "merchant": {"tpm": 1000}},
                "expires_in_s": 86_400,
                "cache_enabled": True,
            },
        )
        assert caller.status_code == 201, caller.text
        body = caller.json()
        assert body["role"] == "caller" and body["cache_enabled"] is True
        assert body["scopes"] == {"models": ["gpt-4o-mini"], "endpoints": None, "merchants": ["m-1"]}
        assert body["limits"]["rpm"] == 60 and body["limits"]["merchant"]["tpm"] == 1000
        expires_at = datetime.fromisoformat(body["expires_at"])
        assert before + timedelta(days=1) <= expires_at <= datetime.now(UTC) + timedelta(days=1)

        # The caller key works on the model path; the store agrees with the response.
        whoami = await client.get("/v1/whoami", headers=bearer(body["key"]))
        assert whoami.json()["key_id"] == body["key_id"]
        stored = key_store.get(uuid.UUID(body["key_id"]))
        assert stored.limits.daily_budget_micros == 5_000_000 and stored.scopes.merchants == ("m-1",)

        fetched = await client.get(f"/admin/keys/{body['key_id']}", headers=bearer(admin_key))
        assert fetched.status_code == 200
        assert fetched.json() == {k: v for k, v in body.items() if k != "key"}
        assert body["key"] not in fetched.text

    run(key_store, redis_url, scenario)


# --------------------------------------------------------------------------- RBAC


def test_tenant_admin_is_confined_to_its_tenant(
    key_store: KeyStore, redis_url: str, tenant: str, other_tenant: str
) -> None:
    _, manager_key = key_store.create("acme admin", tenant, role=Role.KEY_MANAGER)
    own_caller, _ = key_store.create("svc", tenant)
    own_admin, _ = key_store.create("platform ops", tenant, role=Role.ADMIN)
    foreign, foreign_key = key_store.create("their svc", other_tenant)

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = bearer(manager_key)
        # Listing defaults to its own tenant; another tenant (or all of them) is refused.
        listed = await client.get("/admin/keys", headers=auth)
        assert listed.status_code == 200
        assert {k["tenant_id"] for k in listed.json()["data"]} == {tenant}
        assert str(foreign.key_id) not in listed.text
        assert_openai_error(await client.get("/admin/keys", params={"tenant_id": other_tenant}, headers=auth), 403)

        # Another tenant's key does not exist as far as it can tell.
        for response in (
            await client.get(f"/admin/keys/{foreign.key_id}", headers=auth),
            await client.post(f"/admin/keys/{foreign.key_id}/rotate", headers=auth),
            await client.post(f"/admin/keys/{foreign.key_id}/revoke", headers=auth),
            await client.delete(f"/admin/keys/{foreign.key_id}", headers=auth),
        ):
            assert_openai_error(response, 404, "not_found")
        assert await works(client, foreign_key)  # untouched

        # No keys in other tenants, no admins anywhere, and no managing its tenant's admin key.
        denied = await client.post("/admin/keys", headers=auth, json={"name": "x", "tenant_id": other_tenant})
        assert assert_openai_error(denied, 403, "permission_denied")["type"] == "permission_error"
        minted = await client.post(
            "/admin/keys", headers=auth, json={"name": "x", "tenant_id": tenant, "role": "admin"}
        )
        assert assert_openai_error(minted, 403)["param"] == "role"
        assert_openai_error(await client.post(f"/admin/keys/{own_admin.key_id}/revoke", headers=auth), 403)
        assert_openai_error(await client.post(f"/admin/keys/{own_admin.key_id}/rotate", headers=auth), 403)

        # Within its tenant and below its role, it manages keys.
        created = await client.post("/admin/keys", headers=auth, json={"name": "new svc", "tenant_id": tenant})
        assert created.status_code == 201 and created.json()["tenant_id"] == tenant
        revoked = await client.post(f"/admin/keys/{own_caller.key_id}/revoke", headers=auth)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None

    run(key_store, redis_url, scenario)
    assert key_store.get(own_admin.key_id).is_active(datetime.now(UTC))
    assert key_store.get(foreign.key_id).revoked_at is None
    assert [r.name for r in key_store.list(other_tenant)] == ["their svc"]


def test_viewer_reads_but_does_not_manage(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    _, viewer_key = key_store.create("dashboard", tenant, role=Role.VIEWER)
    target, _ = key_store.create("svc", tenant)

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = bearer(viewer_key)
        assert (await client.get(f"/admin/keys/{target.key_id}", headers=auth)).status_code == 200
        assert_openai_error(
            await client.post("/admin/keys", headers=auth, json={"name": "x", "tenant_id": tenant}), 403
        )
        assert_openai_error(await client.post(f"/admin/keys/{target.key_id}/rotate", headers=auth), 403)
        assert_openai_error(await client.delete(f"/admin/keys/{target.key_id}", headers=auth), 403)

    run(key_store, redis_url, scenario)
    assert key_store.get(target.key_id).revoked_at is None


def test_caller_key_gets_403_everywhere(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    caller, caller_key = key_store.create("svc", tenant)
    admin_scoped_out, admin_scoped_out_key = key_store.create(
        "model-only admin", tenant, role=Role.ADMIN, scopes={"endpoints": ["chat", "embeddings"]}
    )

    async def scenario(client: httpx.AsyncClient) -> None:
        for key in (caller_key, admin_scoped_out_key):
            auth = bearer(key)
            for response in (
                await client.get("/admin/keys", headers=auth),
                await client.get(f"/admin/keys/{caller.key_id}", headers=auth),
                await client.post("/admin/keys", headers=auth, json={"name": "x", "tenant_id": tenant}),
                await client.post(f"/admin/keys/{caller.key_id}/rotate", headers=auth),
                await client.post(f"/admin/keys/{caller.key_id}/revoke", headers=auth),
            ):
                assert assert_openai_error(response, 403, "permission_denied")["type"] == "permission_error"

    run(key_store, redis_url, scenario)
    assert [r.name for r in key_store.list(tenant)] == ["svc", "model-only admin"]
    assert key_store.get(admin_scoped_out.key_id).revoked_at is None and key_store.get(caller.key_id).revoked_at is None


def test_missing_or_invalid_keys_get_401(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    from gateway.keys import generate_key

    revoked, revoked_key = key_store.create("old", tenant, role=Role.ADMIN)
    key_store.revoke(revoked.key_id)
    headers: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("not-a-key"),
        bearer(generate_key().plaintext),  # well formed, unknown
        bearer(revoked_key),
    ]

    async def scenario(client: httpx.AsyncClient) -> None:
        for header in headers:
            for response in (
                await client.get("/admin/keys", headers=header),
                await client.post(
                    "/admin/keys", headers=header, json={"name": "x", "tenant_id": tenant, "role": "admin"}
                ),
            ):
                assert_openai_error(response, 401, "invalid_api_key")
                assert response.headers["www-authenticate"] == "Bearer"
        # Authentication comes before validation: a bad body without a key is still 401.
        assert_openai_error(await client.post("/admin/keys", json={"role": "superuser"}), 401)

    run(key_store, redis_url, scenario)
    assert [r.name for r in key_store.list(tenant)] == ["old"]


# --------------------------------------------------------------------------- rotation and revocation


def test_rotation_returns_a_working_successor_and_the_old_key_works_within_overlap(
    key_store: KeyStore, redis_url: str, tenant: str
) -> None:
    _, admin_key = key_store.create("ops", tenant, role=Role.ADMIN)
    old, old_key = key_store.create("svc", tenant, scopes={"models": ["m"]}, limits={"rpm": 5})

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = bearer(admin_key)
        started = datetime.now(UTC)
        rotated = await client.post(f"/admin/keys/{old.key_id}/rotate", headers=auth, json={"overlap_s": 3600})
        assert rotated.status_code == 201, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        body = rotated.json()
        new_key = body["key"]
        assert new_key != old_key and body["rotated_from"] == str(old.key_id)
        assert (body["name"], body["scopes"]["models"], body["limits"]["rpm"]) == ("svc", ["m"], 5)
        previous_expiry = datetime.fromisoformat(body["previous"]["expires_at"])
        assert started + timedelta(hours=1) <= previous_expiry <= datetime.now(UTC) + timedelta(hours=1)
        assert body["previous"]["active"] is True

        # Both keys work during the overlap, under one rate-limit identity.
        old_who = await client.get("/v1/whoami", headers=bearer(old_key))
        new_who = await client.get("/v1/whoami", headers=bearer(new_key))
        assert old_who.status_code == new_who.status_code == 200
        assert new_who.json() == {"key_id": body["key_id"], "lineage_id": str(old.key_id)}
        assert old_who.json()["lineage_id"] == str(old.key_id)

        # A key is rotated once.
        again = await client.post(f"/admin/keys/{old.key_id}/rotate", headers=auth)
        assert "already rotated" in assert_openai_error(again, 422, "validation_failed")["message"]

        # overlap 0 cuts the rotated key off at once; an explicit null expiry means "never".
        cut = await client.post(
            f"/admin/keys/{body['key_id']}/rotate", headers=auth, json={"overlap_s": 0, "expires_at": None}
        )
        assert cut.status_code == 201 and cut.json()["expires_at"] is None
        assert not await works(client, new_key)
        assert await works(client, cut.json()["key"])
        assert await works(client, old_key)  # its own overlap is independent

        # Rotating with a relative expiry for the successor.
        later = await client.post(f"/admin/keys/{cut.json()['key_id']}/rotate", headers=auth, json={"expires_in_s": 60})
        assert later.status_code == 201
        assert datetime.fromisoformat(later.json()["expires_at"]) <= datetime.now(UTC) + timedelta(seconds=60)

    run(key_store, redis_url, scenario)


def test_revocation_makes_the_key_fail_authentication(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    _, admin_key = key_store.create("ops", tenant, role=Role.ADMIN)
    first, first_key = key_store.create("svc-1", tenant)
    second, second_key = key_store.create("svc-2", tenant)

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = bearer(admin_key)
        assert await works(client, first_key) and await works(client, second_key)  # now cached by the authenticator

        revoked = await client.post(f"/admin/keys/{first.key_id}/revoke", headers=auth)
        assert revoked.status_code == 200
        assert revoked.json()["active"] is False and revoked.json()["revoked_at"] is not None
        assert not await works(client, first_key)
        assert await works(client, second_key)

        deleted = await client.delete(f"/admin/keys/{second.key_id}", headers=auth)
        assert deleted.status_code == 200 and deleted.json()["revoked_at"] is not None
        assert not await works(client, second_key)

        # Idempotent: the first revocation time stays.
        again = await client.post(f"/admin/keys/{first.key_id}/revoke", headers=auth)
        assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
        # Revoked keys leave the default list but stay for audit.
        active = await client.get("/admin/keys", params={"tenant_id": tenant}, headers=auth)
        assert [k["name"] for k in active.json()["data"]] == ["ops"]
        everything = await client.get(
            "/admin/keys", params={"tenant_id": tenant, "include_inactive": "true"}, headers=auth
        )
        assert [k["name"] for k in everything.json()["data"]] == ["ops", "svc-1", "svc-2"]

        unknown = uuid.uuid4()
        for response in (
            await client.post(f"/admin/keys/{unknown}/revoke", headers=auth),
            await client.get(f"/admin/keys/{unknown}", headers=auth),
            await client.post(f"/admin/keys/{unknown}/rotate", headers=auth),
        ):
            assert str(unknown) in assert_openai_error(response, 404, "not_found")["message"]
        # A revoked key cannot be rotated back to life.
        assert_openai_error(await client.post(f"/admin/keys/{first.key_id}/rotate", headers=auth), 422)

    run(key_store, redis_url, scenario)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"name": "x", "role": "superuser"}, "role"),
        ({"name": "x", "limits": {"rpm": -1}}, "limits.rpm"),
        ({"name": "x", "limits": {"rmp": 10}}, "limits.rmp"),
        ({"name": "x", "scopes": {"modles": ["a"]}}, "scopes.modles"),
        ({"name": ""}, "name"),
        ({"name": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),  # no timezone
        ({"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),  # in the past
        ({"name": "x", "expires_in_s": 0}, "expires_in_s"),
        ({"name": "x", "expires_in_s": 60, "expires_at": "2030-01-01T00:00:00Z"}, None),
        ({"name": "x", "owner": "me"}, "owner"),
        ({"tenant_id": "t"}, "name"),
    ],
)
def test_invalid_create_requests_are_422_in_openai_shape(
    key_store: KeyStore, redis_url: str, tenant: str, payload: dict[str, Any], param: str | None
) -> None:
    _, admin_key = key_store.create("ops", tenant, role=Role.ADMIN)

    async def scenario(client: httpx.AsyncClient) -> None:
        response = await client.post("/admin/keys", headers=bearer(admin_key), json={"tenant_id": tenant, **payload})
        error = assert_openai_error(response, 422)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, error

    run(key_store, redis_url, scenario)
    assert [r.name for r in key_store.list(tenant)] == ["ops"]


def test_other_malformed_requests_are_422(key_store: KeyStore, redis_url: str, tenant: str) -> None:
    admin, admin_key = key_store.create("ops", tenant, role=Role.ADMIN)

    async def scenario(client: httpx.AsyncClient) -> None:
        auth = bearer(admin_key)
        not_json = await client.post(
            "/admin/keys", headers={**auth, "Content-Type": "application/json"}, content=b"{not json"
        )
        assert_openai_error(not_json, 422, "validation_failed")
        assert assert_openai_error(await client.get("/admin/keys/not-a-uuid", headers=auth), 422)["param"] == "key_id"
        negative = await client.post(f"/admin/keys/{admin.key_id}/rotate", headers=auth, json={"overlap_s": -1})
        assert assert_openai_error(negative, 422)["param"] == "overlap_s"
        flag = await client.get("/admin/keys", params={"include_inactive": "maybe"}, headers=auth)
        assert assert_openai_error(flag, 422)["param"] == "include_inactive"

    run(key_store, redis_url, scenario)
    assert key_store.get(admin.key_id).expires_at is None  # the refused rotation changed nothing


def test_openapi_documents_the_admin_routes(key_store: KeyStore, redis_url: str) -> None:
    async def scenario(client: httpx.AsyncClient) -> None:
        spec = (await client.get("/openapi.json")).json()
        assert {
            "/admin/keys",
            "/admin/keys/{key_id}",
            "/admin/keys/{key_id}/rotate",
            "/admin/keys/{key_id}/revoke",
        } <= set(spec["paths"])
        create = spec["paths"]["/admin/keys"]["post"]
        assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/CreatedKey")
        assert create["security"] == [{"HTTPBearer": []}]
        assert "key" not in spec["components"]["schemas"]["KeyOut"]["properties"]

    run(key_store, redis_url, scenario)
