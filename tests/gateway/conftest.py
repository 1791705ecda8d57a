"""Fixtures of the gateway tests: a key store on the real database, clocks, contexts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import Engine, text

from gateway.keys import AuthContext, KeyLimits, KeyStore, Role, Scopes


class ManualClock:
    """A clock tests move by hand; callable as a datetime clock (keys) or epoch seconds (limiter)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def seconds(self) -> float:
        return self.now.timestamp()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _unique_tenant(admin_engine: Engine, prefix: str) -> Iterator[str]:
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
    yield tenant_id
    with admin_engine.begin() as connection:
        connection.execute(text("DELETE FROM api_keys WHERE tenant_id = :t"), {"t": tenant_id})


@pytest.fixture
def tenant(admin_engine: Engine) -> Iterator[str]:
    """A tenant id unique to the test; its keys are deleted afterwards (the store commits)."""
    yield from _unique_tenant(admin_engine, "t")


@pytest.fixture
def other_tenant(admin_engine: Engine) -> Iterator[str]:
    """A second tenant unique to the test, for isolation checks."""
    yield from _unique_tenant(admin_engine, "o")


@pytest.fixture
def key_clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def store(admin_engine: Engine, redis_client: redis.Redis, key_clock: ManualClock) -> KeyStore:
    return KeyStore(admin_engine, redis_client=redis_client, clock=key_clock)


def make_ctx(
    tenant_id: str = "tenant-a",
    *,
    limits: KeyLimits | dict[str, object] | None = None,
    role: Role = Role.CALLER,
    scopes: Scopes | None = None,
    key_id: uuid.UUID | None = None,
) -> AuthContext:
    """An authenticated context as the authenticator would return it (a value, not a stub)."""
    key_id = key_id or uuid.uuid4()
    parsed = limits if isinstance(limits, KeyLimits) else KeyLimits.model_validate(limits or {})
    return AuthContext(
        key_id=key_id,
        lineage_id=key_id,
        tenant_id=tenant_id,
        role=role,
        scopes=scopes or Scopes(),
        limits=parsed,
    )
