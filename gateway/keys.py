"""Virtual API keys: format, storage, authentication, scopes and admin roles.

Key format
    ``cpk_<prefix>_<secret>_<checksum>``: ``prefix`` is 8 random base62
    characters (unique, the database lookup key, safe to show and log),
    ``secret`` 32 random base62 characters (~190 bits), ``checksum`` the CRC32
    of ``cpk_<prefix>_<secret>`` in 6 base62 characters, so a mistyped key is
    refused without a database round trip. The plaintext is returned once by
    :meth:`KeyStore.create` / :meth:`KeyStore.rotate` and never stored or
    logged: the table holds ``hmac-sha256$<hex>`` (HMAC with a server pepper)
    or, without a pepper, ``sha256$<hex>``. Hashes are compared in constant
    time.

Rotation and revocation
    :meth:`KeyStore.rotate` creates a successor (``rotated_from`` = the old
    key) with the same name, tenant, role, scopes and limits, and shortens the
    old key's ``expires_at`` to ``now + overlap``: it keeps working for the
    overlap window and is refused afterwards, with no extra column.
    :meth:`KeyStore.revoke` sets ``revoked_at``; both set the Redis key
    :data:`REVOCATION_EPOCH_KEY` to a new random value (and publish on
    :data:`REVOCATION_CHANNEL`) after the commit. Every
    :class:`KeyAuthenticator` reads that value at most every
    ``signal_poll_s`` (0.5 s) and drops its cache when it changed, so
    a revocation or rotation made on one replica holds on all of them within
    about a second. If Redis cannot be read, the in-process cache's TTL
    (``cache_ttl_s``, 5 s) bounds the delay instead.

    Rate-limit counters and budgets follow a key across rotations: they are
    keyed by :attr:`AuthContext.lineage_id`, the first key of the rotation
    chain, so rotating does not hand out a fresh budget.

Authorization
    :func:`authorize` checks a model call (or any endpoint) against the key's
    role and scopes (models, endpoints, merchants; ``*`` wildcards).
    :func:`require` checks an admin action against the role and tenant;
    :func:`require_grant` stops a role from minting or managing a more
    powerful key.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, Literal, cast

import redis
import redis.asyncio
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import Engine, Table, bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from core.errors import NotFoundError, ServiceUnavailableError, ValidationFailedError
from core.models.api_key import ApiKey
from gateway.errors import InvalidApiKeyError, PermissionDeniedError

logger = logging.getLogger(__name__)

KEY_SCHEME: Final = "cpk"
PREFIX_LENGTH: Final = 8
SECRET_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEY_RE: Final = re.compile(
    rf"^{KEY_SCHEME}_([0-9A-Za-z]{{{PREFIX_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})_([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)

_MAX_TENANT_ID: Final = 64  # api_keys.tenant_id is VARCHAR(64)

REVOCATION_EPOCH_KEY: Final = "gateway:keys:epoch"
REVOCATION_CHANNEL: Final = "gateway:keys:revoked"

Clock = Callable[[], datetime]


class _Keep(Enum):
    """Default of :meth:`KeyStore.rotate`'s ``expires_at``: keep the old key's expiry."""

    KEEP = "keep"


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------- key format


@dataclass(frozen=True)
class ParsedKey:
    """A key whose format and checksum are valid (not yet known to exist)."""

    prefix: str
    secret: str
    plaintext: str

    def __repr__(self) -> str:  # never print the secret
        return f"ParsedKey(prefix={self.prefix!r})"


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_BASE62[digit])
    return "".join(reversed(chars))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(length))


def _checksum(body: str) -> str:
    # CRC32 < 62**6, so six characters always hold it.
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate_key() -> ParsedKey:
    """Draw a new random key (prefix, secret and checksum)."""
    prefix = _random_base62(PREFIX_LENGTH)
    secret = _random_base62(SECRET_LENGTH)
    body = f"{KEY_SCHEME}_{prefix}_{secret}"
    return ParsedKey(prefix=prefix, secret=secret, plaintext=f"{body}_{_checksum(body)}")


def parse_key(key: str) -> ParsedKey:
    """Validate a key's format and checksum without touching the database.

    Raises:
        InvalidApiKeyError: The key is malformed or its checksum does not match.
    """
    match = _KEY_RE.fullmatch(key.strip())
    if match is None:
        raise InvalidApiKeyError("Malformed API key: expected cpk_<prefix>_<secret>_<checksum>.")
    prefix, secret, checksum = match.groups()
    body = f"{KEY_SCHEME}_{prefix}_{secret}"
    if not hmac.compare_digest(_checksum(body), checksum):
        raise InvalidApiKeyError("Malformed API key: checksum mismatch (check for a typo).")
    return ParsedKey(prefix=prefix, secret=secret, plaintext=f"{body}_{checksum}")


def key_from_authorization(header: str | None) -> str:
    """Extract the key from an ``Authorization: Bearer <key>`` header value.

    Raises:
        InvalidApiKeyError: The header is missing or not a bearer token.
    """
    if not header:
        raise InvalidApiKeyError("Missing API key: send 'Authorization: Bearer <key>'.")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKeyError("Malformed Authorization header: expected 'Bearer <key>'.")
    return token.strip()


def hash_key(plaintext: str, pepper: SecretStr | None = None) -> str:
    """The stored form of a key: HMAC-SHA256 with the pepper, else SHA-256."""
    data = plaintext.encode("ascii")
    if pepper is not None:
        digest = hmac.new(pepper.get_secret_value().encode(), data, hashlib.sha256).hexdigest()
        return f"hmac-sha256${digest}"
    return f"sha256${hashlib.sha256(data).hexdigest()}"


def verify_key(plaintext: str, stored_hash: str, pepper: SecretStr | None = None) -> bool:
    """Whether ``plaintext`` matches ``stored_hash``, compared in constant time."""
    scheme = stored_hash.partition("$")[0]
    if scheme == "hmac-sha256":
        if pepper is None:
            logger.error("keys.pepper_missing", extra={"scheme": scheme})
            return False
        candidate = hash_key(plaintext, pepper)
    elif scheme == "sha256":
        candidate = hash_key(plaintext, None)
    else:
        return False
    return hmac.compare_digest(candidate, stored_hash)


# --------------------------------------------------------------------------- roles, scopes, limits


class Role(StrEnum):
    """Roles of a key; they gate the admin API and model calls."""

    ADMIN = "admin"  # everything, every tenant
    KEY_MANAGER = "key_manager"  # manage the keys of its own tenant, read usage
    VIEWER = "viewer"  # read keys and usage of its own tenant
    CALLER = "caller"  # model calls only


class Action(StrEnum):
    """What :func:`require` checks."""

    CALL_MODELS = "models:call"
    KEYS_CREATE = "keys:create"
    KEYS_READ = "keys:read"
    KEYS_ROTATE = "keys:rotate"
    KEYS_REVOKE = "keys:revoke"
    USAGE_READ = "usage:read"


ROLE_ACTIONS: Final[Mapping[Role, frozenset[Action]]] = {
    Role.ADMIN: frozenset(Action),
    Role.KEY_MANAGER: frozenset(
        {Action.KEYS_CREATE, Action.KEYS_READ, Action.KEYS_ROTATE, Action.KEYS_REVOKE, Action.USAGE_READ}
    ),
    Role.VIEWER: frozenset({Action.KEYS_READ, Action.USAGE_READ}),
    Role.CALLER: frozenset({Action.CALL_MODELS}),
}

# Roles a role may mint, rotate or revoke keys of (no privilege escalation).
GRANTABLE_ROLES: Final[Mapping[Role, frozenset[Role]]] = {
    Role.ADMIN: frozenset(Role),
    Role.KEY_MANAGER: frozenset({Role.KEY_MANAGER, Role.VIEWER, Role.CALLER}),
    Role.VIEWER: frozenset(),
    Role.CALLER: frozenset(),
}

MODEL_ENDPOINTS: Final = frozenset({"chat", "embeddings", "models"})


class Scopes(BaseModel):
    """What a key may reach; stored in ``api_keys.scopes``.

    Patterns are exact names, ``*`` (anything) or a prefix ending in ``*``
    (``openai/*``, ``admin:*``).

    Attributes:
        models: Models the key may call.
        endpoints: Endpoints (``chat``, ``embeddings``, ``models``,
            ``admin:keys``, ``admin:usage``, ...); None means whatever the
            role allows.
        merchants: Merchants the key may act for; None means any.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] = ("*",)
    endpoints: tuple[str, ...] | None = None
    merchants: tuple[str, ...] | None = None


class Limits(BaseModel):
    """Limits of one dimension (a key, a tenant, a merchant); None is unlimited.

    Attributes:
        rpm: Requests per minute.
        tpm: Tokens (prompt + completion) per minute.
        daily_budget_micros: Spend per UTC day, in micro-USD.
        monthly_budget_micros: Spend per UTC calendar month, in micro-USD.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    daily_budget_micros: int | None = Field(default=None, ge=0)
    monthly_budget_micros: int | None = Field(default=None, ge=0)

    def is_empty(self) -> bool:
        """Whether no limit is set at all."""
        return all(v is None for v in (self.rpm, self.tpm, self.daily_budget_micros, self.monthly_budget_micros))


class KeyLimits(Limits):
    """A key's limits (``api_keys.limits``).

    Attributes:
        merchant: Limits applied to each merchant served through this key.
            Their counters are per (tenant, merchant), shared by the tenant's
            keys; None falls back to the limiter's default merchant limits.
    """

    merchant: Limits | None = None


def _matches(pattern: str, value: str) -> bool:
    if pattern in ("*", value):
        return True
    return pattern.endswith("*") and value.startswith(pattern[:-1])


def _allowed(patterns: Iterable[str], value: str) -> bool:
    return any(_matches(p, value) for p in patterns)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as the admin API shows it: everything but the hash."""

    key_id: uuid.UUID
    prefix: str
    name: str
    tenant_id: str
    role: Role
    scopes: Scopes
    limits: KeyLimits
    cache_enabled: bool
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None

    @property
    def display_prefix(self) -> str:
        """The public part of the key, e.g. ``cpk_Ab12Cd34``."""
        return f"{KEY_SCHEME}_{self.prefix}"

    def is_active(self, now: datetime) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=row.key_id,
        prefix=row.prefix,
        name=row.name,
        tenant_id=row.tenant_id,
        role=Role(row.role),
        scopes=Scopes.model_validate(row.scopes or {}),
        limits=KeyLimits.model_validate(row.limits or {}),
        cache_enabled=row.cache_enabled,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rotated_from=row.rotated_from,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
    )


@dataclass(frozen=True)
class StoredKey:
    """What authentication needs: the record, its hash and its rotation lineage."""

    record: ApiKeyRecord
    key_hash: str
    lineage_id: uuid.UUID


@dataclass(frozen=True)
class AuthContext:
    """Who is calling, attached to every authenticated request.

    Attributes:
        key_id: The key that authenticated.
        lineage_id: The first key of its rotation chain (rate-limit identity).
        tenant_id: The tenant owning the key.
        role: The key's role.
        scopes: Models, endpoints and merchants it may reach.
        limits: Its rate limits and budgets.
        cache_enabled: Whether responses for this key may be cached.
        name: The key's display name.
        prefix: The public prefix, for logs.
    """

    key_id: uuid.UUID
    lineage_id: uuid.UUID
    tenant_id: str
    role: Role
    scopes: Scopes
    limits: KeyLimits
    cache_enabled: bool = False
    name: str = ""
    prefix: str = ""

    @classmethod
    def from_stored(cls, stored: StoredKey) -> AuthContext:
        """Build the context of an authenticated stored key."""
        rec = stored.record
        return cls(
            key_id=rec.key_id,
            lineage_id=stored.lineage_id,
            tenant_id=rec.tenant_id,
            role=rec.role,
            scopes=rec.scopes,
            limits=rec.limits,
            cache_enabled=rec.cache_enabled,
            name=rec.name,
            prefix=rec.prefix,
        )


# --------------------------------------------------------------------------- store


def _as_scopes(value: Scopes | Mapping[str, Any] | None) -> Scopes:
    if isinstance(value, Scopes):
        return value
    return Scopes.model_validate(dict(value or {}))


def _as_limits(value: KeyLimits | Mapping[str, Any] | None) -> KeyLimits:
    if isinstance(value, KeyLimits):
        return value
    return KeyLimits.model_validate(dict(value or {}))


_LINEAGE_SQL = text(
    """
    WITH RECURSIVE chain AS (
        SELECT key_id, rotated_from, 0 AS depth FROM api_keys WHERE key_id = :key_id
        UNION ALL
        SELECT k.key_id, k.rotated_from, c.depth + 1
        FROM api_keys AS k JOIN chain AS c ON k.key_id = c.rotated_from
        WHERE c.depth < 1000
    )
    SELECT key_id FROM chain ORDER BY depth DESC LIMIT 1
    """
)


class KeyStore:
    """Create, list, rotate and revoke keys in ``api_keys`` (sync, owner engine).

    Each method is its own transaction: key administration is a boundary of
    its own (the plaintext must not be returned for a key that was not
    committed). The revocation signal is sent after the commit.

    Args:
        engine: A sync engine with write access to ``api_keys`` (the
            owner/gateway role; the merchant-facing app role has none).
        pepper: Server secret for HMAC-SHA256 key hashes; None stores plain
            SHA-256 (fine for random 190-bit secrets, the pepper adds defence
            against a leaked table).
        redis_client: Sync Redis for the revocation signal; None relies on
            the authenticators' cache TTL alone.
        clock: Source of "now" (tests move it).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        pepper: SecretStr | None = None,
        redis_client: redis.Redis | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._engine = engine
        self.pepper = pepper
        self._redis = redis_client
        self._clock = clock

    def create(
        self,
        name: str,
        tenant_id: str,
        role: Role | str = Role.CALLER,
        scopes: Scopes | Mapping[str, Any] | None = None,
        limits: KeyLimits | Mapping[str, Any] | None = None,
        expires_at: datetime | None = None,
        cache_enabled: bool = False,
    ) -> tuple[ApiKeyRecord, str]:
        """Create a key; return its record and the plaintext (shown once).

        Raises:
            ValidationFailedError: Unknown role, bad scopes or limits, an
                expiry in the past, an empty name or a bad tenant id.
        """
        try:
            role = Role(role)
            scopes = _as_scopes(scopes)
            limits = _as_limits(limits)
        except ValueError as exc:
            raise ValidationFailedError(f"invalid key settings: {exc}") from exc
        if expires_at is not None and expires_at <= self._clock():
            raise ValidationFailedError("expires_at must be in the future")
        if not name.strip():
            raise ValidationFailedError("a key needs a name")
        if not 0 < len(tenant_id) <= _MAX_TENANT_ID:
            raise ValidationFailedError(f"tenant_id must be 1 to {_MAX_TENANT_ID} characters")
        for attempt in range(3):
            key = generate_key()
            try:
                with Session(self._engine) as session, session.begin():
                    row = self._new_row(key, name, tenant_id, role, scopes, limits, expires_at, cache_enabled, None)
                    session.add(row)
                    session.flush()
                    record = _record(row)
            except IntegrityError:  # prefix collision: ~1e-14 per key, retry with a new draw
                if attempt == 2:
                    raise
                continue
            logger.info("keys.created", extra={"key_id": str(record.key_id), "prefix": key.prefix, "role": role.value})
            return record, key.plaintext
        raise AssertionError("unreachable")

    def _new_row(
        self,
        key: ParsedKey,
        name: str,
        tenant_id: str,
        role: Role,
        scopes: Scopes,
        limits: KeyLimits,
        expires_at: datetime | None,
        cache_enabled: bool,
        rotated_from: uuid.UUID | None,
    ) -> ApiKey:
        return ApiKey(
            key_id=uuid.uuid4(),
            prefix=key.prefix,
            key_hash=hash_key(key.plaintext, self.pepper),
            name=name,
            tenant_id=tenant_id,
            role=role.value,
            scopes=scopes.model_dump(mode="json", exclude_none=True),
            limits=limits.model_dump(mode="json", exclude_none=True),
            cache_enabled=cache_enabled,
            expires_at=expires_at,
            rotated_from=rotated_from,
            created_at=self._clock(),
        )

    def get(self, key_id: uuid.UUID) -> ApiKeyRecord:
        """The key ``key_id``.

        Raises:
            NotFoundError: No such key.
        """
        with Session(self._engine) as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"API key {key_id} not found")
            return _record(row)

    def list(self, tenant_id: str | None = None, *, include_inactive: bool = True) -> builtins.list[ApiKeyRecord]:
        """Keys of one tenant (or all), oldest first."""
        stmt = select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id)
        if tenant_id is not None:
            stmt = stmt.where(ApiKey.tenant_id == tenant_id)
        with Session(self._engine) as session:
            records = [_record(row) for row in session.scalars(stmt)]
        if include_inactive:
            return records
        now = self._clock()
        return [r for r in records if r.is_active(now)]

    def rotate(
        self,
        key_id: uuid.UUID,
        overlap: timedelta = timedelta(hours=1),
        *,
        expires_at: datetime | Literal[_Keep.KEEP] | None = _Keep.KEEP,
    ) -> tuple[ApiKeyRecord, str]:
        """Replace a key: the successor works now, the old one until ``now + overlap``.

        Args:
            key_id: The active key to rotate.
            overlap: How long the old key keeps working (0 cuts it off now).
            expires_at: The successor's expiry (None: never); by default the
                old key's original expiry.

        Raises:
            NotFoundError: No such key.
            ValidationFailedError: The key is revoked, expired or already rotated.
        """
        if overlap < timedelta(0):
            raise ValidationFailedError("overlap must not be negative")
        key = generate_key()
        with Session(self._engine) as session, session.begin():
            old = session.get(ApiKey, key_id, with_for_update=True)
            if old is None:
                raise NotFoundError(f"API key {key_id} not found")
            now = self._clock()
            old_record = _record(old)
            if not old_record.is_active(now):
                raise ValidationFailedError("only an active key can be rotated")
            successor = session.scalar(select(ApiKey.key_id).where(ApiKey.rotated_from == key_id).limit(1))
            if successor is not None:
                raise ValidationFailedError(f"API key {key_id} was already rotated (successor {successor})")
            new_expiry = old.expires_at if expires_at is _Keep.KEEP else expires_at
            cutoff = now + overlap
            old.expires_at = cutoff if old.expires_at is None else min(old.expires_at, cutoff)
            row = self._new_row(
                key,
                old_record.name,
                old_record.tenant_id,
                old_record.role,
                old_record.scopes,
                old_record.limits,
                new_expiry,
                old_record.cache_enabled,
                old_record.key_id,
            )
            session.add(row)
            session.flush()
            record = _record(row)
        logger.info(
            "keys.rotated",
            extra={"key_id": str(key_id), "new_key_id": str(record.key_id), "overlap_s": overlap.total_seconds()},
        )
        self._signal("rotated", key_id)
        return record, key.plaintext

    def revoke(self, key_id: uuid.UUID) -> ApiKeyRecord:
        """Revoke a key now (idempotent: a second call keeps the first time).

        Raises:
            NotFoundError: No such key.
        """
        with Session(self._engine) as session, session.begin():
            row = session.get(ApiKey, key_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"API key {key_id} not found")
            if row.revoked_at is None:
                row.revoked_at = self._clock()
            session.flush()
            record = _record(row)
        logger.info("keys.revoked", extra={"key_id": str(key_id)})
        self._signal("revoked", key_id)
        return record

    def find_by_prefix(self, prefix: str) -> StoredKey | None:
        """The key with this prefix, its hash and lineage, or None."""
        with Session(self._engine) as session:
            row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).one_or_none()
            if row is None:
                return None
            lineage = row.key_id
            if row.rotated_from is not None:
                lineage = session.execute(_LINEAGE_SQL, {"key_id": row.key_id}).scalar_one()
            return StoredKey(record=_record(row), key_hash=row.key_hash, lineage_id=lineage)

    def touch(self, last_used: Mapping[uuid.UUID, datetime]) -> int:
        """Record last use times in one statement batch; never moves a time back."""
        if not last_used:
            return 0
        table = cast(Table, ApiKey.__table__)
        at: BindParameter[datetime] = bindparam("b_at")
        stmt = (
            update(table)
            .where(table.c.key_id == bindparam("b_key_id"))
            .values(last_used_at=func.greatest(func.coalesce(table.c.last_used_at, at), at))
        )
        with self._engine.begin() as conn:
            conn.execute(stmt, [{"b_key_id": k, "b_at": at} for k, at in last_used.items()])
        return len(last_used)

    def _signal(self, reason: str, key_id: uuid.UUID) -> None:
        if self._redis is None:
            return
        try:
            pipe = self._redis.pipeline(transaction=True)
            # A fresh random value, not a counter: a counter reset by a Redis restart could
            # come back to a value a replica already holds and hide a change (ABA).
            pipe.set(REVOCATION_EPOCH_KEY, uuid.uuid4().hex)
            pipe.publish(REVOCATION_CHANNEL, f"{reason}:{key_id}")
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            # The database is the source of truth; replicas still converge within their cache TTL.
            logger.warning("keys.signal_failed", extra={"key_id": str(key_id), "error": str(exc)})


# --------------------------------------------------------------------------- authentication


@dataclass
class _CacheEntry:
    stored: StoredKey
    epoch: bytes | None
    fetched_at: float
    context: AuthContext | None = None  # set once a key verified against this entry


class KeyAuthenticator:
    """Authenticate keys on the request path, with a short in-process cache.

    Database lookups are the sync :meth:`KeyStore.find_by_prefix` run in a
    worker thread (``asyncio.to_thread``), only on cache misses, with
    concurrent misses for one prefix coalesced into a single query. With
    the cache, almost every request is pure in-memory work plus a SHA-256.

    Cache validity: an entry is used for at most ``cache_ttl_s`` and only while
    the Redis revocation epoch it was loaded under is still current. The
    epoch is read at most every ``signal_poll_s``, on the request path.

    A key that verified against a cache entry is remembered by a keyed
    BLAKE2b digest (a per-process random key; never the plaintext): while
    that entry is the current one, the same key skips parsing and the
    HMAC and gets the same :class:`AuthContext` (revocation and expiry are
    still checked on every call).

    ``last_used_at`` is recorded in memory and written in batches every
    ``touch_interval_s`` (off the hot path, in a background task) and on
    :meth:`aclose`.

    Args:
        store: Where keys live.
        redis_client: Async Redis holding the revocation epoch; None disables
            the signal (the cache TTL alone bounds propagation).
        cache_ttl_s: Lifetime of a cached lookup.
        signal_poll_s: Minimum interval between reads of the epoch.
        cache_size: Maximum cached prefixes (least recently used evicted).
        touch_interval_s: Interval between ``last_used_at`` writes.
        redis_timeout_s: Upper bound on one read of the epoch.
        clock: Source of "now" for expiry checks (tests move it).
    """

    def __init__(
        self,
        store: KeyStore,
        redis_client: redis.asyncio.Redis | None = None,
        *,
        cache_ttl_s: float = 5.0,
        signal_poll_s: float = 0.5,
        cache_size: int = 10_000,
        touch_interval_s: float = 30.0,
        redis_timeout_s: float = 0.25,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._redis = redis_client
        self._cache_ttl_s = cache_ttl_s
        self._signal_poll_s = signal_poll_s
        self._cache_size = cache_size
        self._touch_interval_s = touch_interval_s
        self._redis_timeout_s = redis_timeout_s
        self._clock = clock
        self._cache: OrderedDict[str, _CacheEntry] = OrderedDict()
        self._verified: dict[bytes, _CacheEntry] = {}
        self._digest_key = secrets.token_bytes(32)
        self._epoch: bytes | None = None
        self._epoch_checked_at = float("-inf")
        self._signal_healthy = True
        self._inflight: dict[str, asyncio.Future[StoredKey | None]] = {}
        self._pending_touch: dict[uuid.UUID, datetime] = {}
        self._last_touch_flush = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def authenticate(self, api_key: str | None) -> AuthContext:
        """Check a key and return who is calling.

        Raises:
            InvalidApiKeyError: Missing, malformed, unknown, expired, rotated
                out (overlap over) or revoked.
            ServiceUnavailableError: The key is not cached and the database
                cannot be reached.
        """
        if not api_key:
            raise InvalidApiKeyError("Missing API key: send 'Authorization: Bearer <key>'.")
        if time.monotonic() - self._epoch_checked_at >= self._signal_poll_s:
            await self._check_signal()
        digest = hashlib.blake2b(api_key.encode(), digest_size=16, key=self._digest_key).digest()
        entry = self._verified.get(digest)
        if (
            entry is not None
            and entry.context is not None
            and self._cache.get(entry.stored.record.prefix) is entry
            and entry.epoch == self._epoch
            and time.monotonic() - entry.fetched_at < self._cache_ttl_s
        ):
            self._check_record(entry.stored.record)
            return entry.context
        parsed = parse_key(api_key)
        stored = await self._lookup(parsed.prefix)
        if stored is None or not verify_key(parsed.plaintext, stored.key_hash, self._store.pepper):
            raise InvalidApiKeyError()
        self._check_record(stored.record)
        context = AuthContext.from_stored(stored)
        entry = self._cache.get(parsed.prefix)
        if entry is not None and entry.stored is stored:
            entry.context = context
            if len(self._verified) >= self._cache_size:
                self._verified.clear()
            self._verified[digest] = entry
        return context

    def _check_record(self, record: ApiKeyRecord) -> None:
        """Refuse a revoked or expired key; note the use of a valid one."""
        now = self._clock()
        if record.revoked_at is not None:
            raise InvalidApiKeyError("This API key has been revoked.")
        if record.expires_at is not None and record.expires_at <= now:
            raise InvalidApiKeyError("This API key has expired (or was rotated and its overlap window has ended).")
        self._note_use(record.key_id, now)

    async def authenticate_header(self, authorization: str | None) -> AuthContext:
        """:meth:`authenticate` the key of an ``Authorization: Bearer`` header."""
        return await self.authenticate(key_from_authorization(authorization))

    def invalidate(self) -> None:
        """Drop every cached lookup (this process only)."""
        self._cache.clear()
        self._verified.clear()

    async def _check_signal(self) -> None:
        if self._redis is None:
            return
        started = time.monotonic()
        if started - self._epoch_checked_at < self._signal_poll_s:
            return
        # Claimed before awaiting, so concurrent requests do not all poll.
        self._epoch_checked_at = started
        try:
            value = await asyncio.wait_for(self._redis.get(REVOCATION_EPOCH_KEY), self._redis_timeout_s)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            if self._signal_healthy:
                logger.warning("keys.signal_unavailable", extra={"error": str(exc), "cache_ttl_s": self._cache_ttl_s})
            self._signal_healthy = False
            return
        if not self._signal_healthy:
            logger.info("keys.signal_recovered")
            self._signal_healthy = True
        epoch = value if isinstance(value, bytes) or value is None else str(value).encode()
        if epoch != self._epoch:
            self._epoch = epoch
            self._cache.clear()
            self._verified.clear()

    async def _lookup(self, prefix: str) -> StoredKey | None:
        entry = self._cache.get(prefix)
        if entry is not None:
            fresh = time.monotonic() - entry.fetched_at < self._cache_ttl_s
            if fresh and entry.epoch == self._epoch:
                self._cache.move_to_end(prefix)
                return entry.stored
            del self._cache[prefix]
        pending = self._inflight.get(prefix)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    return await self._lookup(prefix)  # the leading request was cancelled, not us
                raise
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self._inflight[prefix] = future
        epoch, fetched_at = self._epoch, time.monotonic()
        try:
            stored = await asyncio.to_thread(self._store.find_by_prefix, prefix)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except (OperationalError, InterfaceError) as exc:
            error = ServiceUnavailableError("the key database cannot be reached")
            self._fail(future, error)
            raise error from exc
        except Exception as exc:
            self._fail(future, exc)
            raise
        finally:
            self._inflight.pop(prefix, None)
        future.set_result(stored)
        # Only keys that exist are cached; unknown prefixes always reach the database.
        if stored is not None and epoch == self._epoch:
            self._cache[prefix] = _CacheEntry(stored=stored, epoch=epoch, fetched_at=fetched_at)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return stored

    @staticmethod
    def _fail(future: asyncio.Future[StoredKey | None], exc: BaseException) -> None:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning when nobody else waited

    def _note_use(self, key_id: uuid.UUID, now: datetime) -> None:
        self._pending_touch[key_id] = now
        if time.monotonic() - self._last_touch_flush >= self._touch_interval_s:
            self._last_touch_flush = time.monotonic()
            task = asyncio.get_running_loop().create_task(self.flush_last_used())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush_last_used(self) -> int:
        """Write pending ``last_used_at`` times now; return how many keys were written."""
        batch, self._pending_touch = self._pending_touch, {}
        if not batch:
            return 0
        try:
            return await asyncio.to_thread(self._store.touch, batch)
        except Exception as exc:  # best effort: usage bookkeeping must not fail requests
            logger.warning("keys.touch_failed", extra={"keys": len(batch), "error": str(exc)})
            return 0

    async def aclose(self) -> None:
        """Wait for background writes and flush pending ``last_used_at`` times."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush_last_used()


# --------------------------------------------------------------------------- authorization


def authorize(ctx: AuthContext, endpoint: str, model: str | None = None, merchant_id: str | None = None) -> None:
    """Check that ``ctx`` may call ``endpoint`` (with ``model``, for ``merchant_id``).

    Args:
        ctx: The authenticated caller.
        endpoint: ``chat``, ``embeddings``, ``models`` or an admin endpoint
            such as ``admin:keys``.
        model: The requested model, if the endpoint takes one.
        merchant_id: The merchant the call serves, if any.

    Raises:
        PermissionDeniedError: The role cannot call models, or the endpoint,
            model or merchant is outside the key's scopes.
    """
    if endpoint in MODEL_ENDPOINTS and Action.CALL_MODELS not in ROLE_ACTIONS[ctx.role]:
        raise PermissionDeniedError(f"A key with role '{ctx.role}' cannot call model endpoints.")
    if ctx.scopes.endpoints is not None and not _allowed(ctx.scopes.endpoints, endpoint):
        raise PermissionDeniedError(f"This API key is not allowed to use the '{endpoint}' endpoint.")
    if model is not None and not _allowed(ctx.scopes.models, model):
        raise PermissionDeniedError(f"This API key is not allowed to use model '{model}'.", param="model")
    if merchant_id is not None and ctx.scopes.merchants is not None and merchant_id not in ctx.scopes.merchants:
        raise PermissionDeniedError(f"This API key may not act for merchant '{merchant_id}'.", param="merchant_id")


def allowed_models(ctx: AuthContext, models: Iterable[str]) -> builtins.list[str]:
    """The subset of ``models`` this key may call (for ``/v1/models``)."""
    return [m for m in models if _allowed(ctx.scopes.models, m)]


def require(ctx: AuthContext, action: Action | str, tenant_id: str | None) -> None:
    """Check an admin action against the caller's role and tenant.

    Args:
        ctx: The authenticated caller.
        action: What it wants to do.
        tenant_id: The tenant the action touches; None means every tenant
            (admins only).

    Raises:
        PermissionDeniedError: The role lacks the action, or the tenant is
            not the caller's own (unless the caller is an admin).
    """
    action = Action(action)
    if action not in ROLE_ACTIONS[ctx.role]:
        raise PermissionDeniedError(f"Role '{ctx.role}' may not perform '{action}'.")
    if ctx.role is not Role.ADMIN and tenant_id != ctx.tenant_id:
        raise PermissionDeniedError(f"Role '{ctx.role}' may only act on its own tenant.")


def require_grant(ctx: AuthContext, role: Role | str) -> None:
    """Check that the caller may create or manage a key with ``role``.

    Raises:
        PermissionDeniedError: That would hand out more than the caller's role.
    """
    try:
        target = Role(role)
    except ValueError as exc:
        raise PermissionDeniedError(f"Unknown role '{role}'.", param="role") from exc
    if target not in GRANTABLE_ROLES[ctx.role]:
        raise PermissionDeniedError(f"Role '{ctx.role}' may not create or manage '{target}' keys.", param="role")


__all__ = [
    "REVOCATION_CHANNEL",
    "REVOCATION_EPOCH_KEY",
    "Action",
    "ApiKeyRecord",
    "AuthContext",
    "KeyAuthenticator",
    "KeyLimits",
    "KeyStore",
    "Limits",
    "ParsedKey",
    "Role",
    "Scopes",
    "StoredKey",
    "allowed_models",
    "authorize",
    "generate_key",
    "hash_key",
    "key_from_authorization",
    "parse_key",
    "require",
    "require_grant",
    "verify_key",
]
