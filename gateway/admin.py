"""Key administration API: create, list, read, rotate and revoke gateway keys.

:func:`build_admin_router` returns a FastAPI router (mounted at ``/admin`` by
default) over a :class:`~gateway.keys.KeyStore`:

================================  ======  ==========================================
route                             status  what
================================  ======  ==========================================
``POST /admin/keys``              201     create; the plaintext ``key`` is shown once
``GET /admin/keys``               200     list (``tenant_id``, ``include_inactive``)
``GET /admin/keys/{key_id}``      200     one key
``POST /admin/keys/{id}/rotate``  201     successor and its plaintext
``POST /admin/keys/{id}/revoke``  200     the revoked key (``DELETE`` is an alias)
================================  ======  ==========================================

Authorization
    Every route authenticates the caller, checks the role with
    :func:`~gateway.keys.require` for the tenant it touches, and for create,
    rotate and revoke also :func:`~gateway.keys.require_grant` for the
    target key's role, so nobody hands out more than it holds. A tenant's
    key manager sees only its own tenant: another tenant's key answers 404,
    as if it did not exist. A key whose ``endpoints`` scope excludes
    ``admin:keys`` is refused.

Bootstrap
    On a fresh install there is no admin key yet. When ``bootstrap_token``
    is configured (``COPILOT_GATEWAY__ADMIN_TOKEN``), a bearer token equal to
    it (compared in constant time) acts as a platform admin, so the first
    admin key can be created. Every use is logged (never the token).

Errors
    Expected failures, including request validation, are rendered as
    OpenAI errors (``{"error": {"message", "type", "code", "param"}}``) by
    the router itself, so the host app needs no exception handler: 401
    missing or invalid key, 403 denied, 404 unknown key, 422 invalid input,
    503 database unreachable. Every response carries
    ``Cache-Control: no-store``.

Plaintext keys appear only in the bodies of create and rotate responses;
they are never logged and never listed.
"""

# No ``from __future__ import annotations``: the routes are closures whose annotations
# name local dependencies, and FastAPI resolves string annotations in module globals only.

import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool

from core.errors import CopilotError, NotFoundError, ServiceUnavailableError, ValidationFailedError
from gateway.errors import GatewayError
from gateway.keys import (
    Action,
    ApiKeyRecord,
    AuthContext,
    KeyLimits,
    KeyStore,
    Role,
    Scopes,
    authorize,
    key_from_authorization,
    require,
    require_grant,
    utcnow,
)

logger = logging.getLogger(__name__)

ADMIN_ENDPOINT: Final = "admin:keys"
BOOTSTRAP_KEY_ID: Final = uuid.UUID(int=0)
MAX_OVERLAP_S: Final = 30 * 86_400
MAX_EXPIRES_IN_S: Final = 10 * 365 * 86_400

# Friendlier names accepted wherever a role is given (API and CLI).
ROLE_ALIASES: Final[Mapping[str, Role]] = {"tenant_admin": Role.KEY_MANAGER}

Authenticate = Callable[[Request], Awaitable[AuthContext]]


def parse_role(value: object) -> Role:
    """A role from its name or an alias (``tenant_admin`` is ``key_manager``).

    Raises:
        ValueError: Not a role.
    """
    if isinstance(value, Role):
        return value
    name = str(value).strip().lower()
    if name in ROLE_ALIASES:
        return ROLE_ALIASES[name]
    try:
        return Role(name)
    except ValueError:
        names = ", ".join([*(r.value for r in Role), *ROLE_ALIASES])
        raise ValueError(f"unknown role {value!r}: use one of {names}") from None


def _role_or_alias(value: object) -> object:
    try:
        return parse_role(value)
    except ValueError:
        return value  # the enum's own validation reports it, listing the choices


RoleName = Annotated[Role, BeforeValidator(_role_or_alias)]


# --------------------------------------------------------------------------- schemas


class KeyOut(BaseModel):
    """A key as the admin API shows it: never its hash or plaintext."""

    model_config = ConfigDict(frozen=True)

    key_id: uuid.UUID
    prefix: str = Field(description="The public start of the key, e.g. `cpk_Ab12Cd34`; safe to log.")
    name: str
    tenant_id: str
    role: Role
    scopes: Scopes
    limits: KeyLimits
    cache_enabled: bool
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_from: uuid.UUID | None = Field(description="The key this one replaced, if it came from a rotation.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded in batches; may lag by up to a minute.")
    active: bool = Field(description="Neither revoked nor expired now.")

    @classmethod
    def from_record(cls, record: ApiKeyRecord, now: datetime) -> "KeyOut":
        """The public view of ``record`` at ``now``."""
        return cls(
            key_id=record.key_id,
            prefix=record.display_prefix,
            name=record.name,
            tenant_id=record.tenant_id,
            role=record.role,
            scopes=record.scopes,
            limits=record.limits,
            cache_enabled=record.cache_enabled,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            rotated_from=record.rotated_from,
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            active=record.is_active(now),
        )


class CreatedKey(KeyOut):
    """A new key with its plaintext, which is never shown again."""

    key: str = Field(description="The API key. Shown once: store it now.")


class RotatedKey(CreatedKey):
    """The successor of a rotated key, with its plaintext."""

    previous: KeyOut = Field(description="The rotated key; it keeps working until its `expires_at`.")


class KeyList(BaseModel):
    """A list of keys, oldest first."""

    object: Literal["list"] = "list"
    data: list[KeyOut]


class _Expiry(BaseModel):
    expires_at: AwareDatetime | None = Field(default=None, description="Absolute expiry (with a timezone).")
    expires_in_s: int | None = Field(
        default=None, gt=0, le=MAX_EXPIRES_IN_S, description="Expiry relative to now, in seconds."
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> "_Expiry":
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give expires_at or expires_in_s, not both")
        return self

    def resolve(self, now: datetime) -> datetime | None:
        """The absolute expiry asked for (None: never); must be in the future."""
        if self.expires_in_s is not None:
            return now + timedelta(seconds=self.expires_in_s)
        if self.expires_at is not None and self.expires_at <= now:
            raise ValidationFailedError("expires_at must be in the future", param="expires_at")
        return self.expires_at


class CreateKeyRequest(_Expiry):
    """What a new key is for and what it may do."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="A label, e.g. the service using the key.")
    tenant_id: str = Field(min_length=1, max_length=64, description="The tenant owning the key.")
    role: RoleName = Field(
        default=Role.CALLER,
        description="`caller` (model calls), `viewer`, `key_manager` (alias `tenant_admin`) or `admin`.",
    )
    scopes: Scopes = Field(default_factory=Scopes)
    limits: KeyLimits = Field(default_factory=KeyLimits)
    cache_enabled: bool = False


class RotateKeyRequest(_Expiry):
    """How to rotate: the old key keeps working for ``overlap_s``.

    The successor keeps the old key's expiry unless ``expires_at`` or
    ``expires_in_s`` is given; an explicit ``"expires_at": null`` means never.
    """

    model_config = ConfigDict(extra="forbid")

    overlap_s: float = Field(default=3600, ge=0, le=MAX_OVERLAP_S, description="How long the old key keeps working.")


# --------------------------------------------------------------------------- errors


def openai_error_body(
    message: str, *, error_type: str, code: str | None, param: str | None
) -> dict[str, dict[str, str | None]]:
    """OpenAI's error body."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def _error_response(exc: CopilotError) -> JSONResponse:
    if isinstance(exc, GatewayError):
        return JSONResponse(exc.to_openai(), status_code=exc.status, headers=exc.headers)
    error_type = "invalid_request_error" if 400 <= exc.status < 500 else "api_error"
    param = exc.extra.get("param")
    body = openai_error_body(
        exc.detail, error_type=error_type, code=exc.code, param=param if isinstance(param, str) else None
    )
    return JSONResponse(body, status_code=exc.status)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    problems: list[str] = []
    first_param: str | None = None
    for error in exc.errors()[:5]:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path", "header")]
        where = ".".join(loc)
        first_param = first_param or where or None
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    message = "Invalid request: " + "; ".join(problems or ["malformed request"])
    body = openai_error_body(message, error_type="invalid_request_error", code="validation_failed", param=first_param)
    return JSONResponse(body, status_code=422)


class AdminRoute(APIRoute):
    """Renders expected failures as OpenAI errors and marks every response ``no-store``.

    Done in the route class rather than with app exception handlers so the
    router behaves the same in whatever app mounts it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler with the error rendering."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except RequestValidationError as exc:
                response = _validation_response(exc)
            except CopilotError as exc:
                response = _error_response(exc)
            except (OperationalError, InterfaceError) as exc:
                logger.warning("admin.database_unavailable", extra={"error": type(exc).__name__})
                response = _error_response(ServiceUnavailableError("the key database cannot be reached"))
            response.headers["cache-control"] = "no-store"
            return response

        return handle


# --------------------------------------------------------------------------- router


def bootstrap_context() -> AuthContext:
    """The platform-admin identity of the bootstrap token."""
    return AuthContext(
        key_id=BOOTSTRAP_KEY_ID,
        lineage_id=BOOTSTRAP_KEY_ID,
        tenant_id="",
        role=Role.ADMIN,
        scopes=Scopes(),
        limits=KeyLimits(),
        name="bootstrap",
        prefix="bootstrap",
    )


def _actor(ctx: AuthContext) -> str:
    return ctx.prefix or str(ctx.key_id)


def build_admin_router(
    store: KeyStore,
    authenticate: Authenticate,
    *,
    bootstrap_token: SecretStr | None = None,
    prefix: str = "/admin",
    clock: Callable[[], datetime] = utcnow,
) -> APIRouter:
    """The key administration routes.

    Args:
        store: Where keys live (sync; called in a worker thread).
        authenticate: Turns a request into the caller's context, raising
            :class:`~gateway.errors.InvalidApiKeyError` for a missing or bad
            key (typically ``KeyAuthenticator.authenticate_header`` on the
            ``Authorization`` header).
        bootstrap_token: A secret that acts as a platform admin (to create
            the first admin key); None or empty disables it.
        prefix: Where the routes live; include the router without a prefix.
        clock: Source of "now" for relative expiries and ``active``.

    Returns:
        A router to ``include_router`` into the gateway app.
    """
    bootstrap = bootstrap_token.get_secret_value().encode() if bootstrap_token is not None else b""
    bearer = HTTPBearer(auto_error=False, description="A gateway key (`cpk_...`) or the bootstrap admin token.")

    async def caller(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> AuthContext:
        # ``credentials`` documents the scheme in OpenAPI; the header is parsed here for precise 401 messages.
        del credentials
        token = key_from_authorization(request.headers.get("authorization"))
        if bootstrap and hmac.compare_digest(token.encode(), bootstrap):
            logger.warning("admin.bootstrap_used", extra={"path": request.url.path})
            ctx = bootstrap_context()
        else:
            ctx = await authenticate(request)
        authorize(ctx, ADMIN_ENDPOINT)
        return ctx

    Caller = Annotated[AuthContext, Depends(caller)]
    KeyId = Annotated[uuid.UUID, Path(description="The key's id.")]

    async def visible_key(ctx: AuthContext, key_id: uuid.UUID, action: Action) -> ApiKeyRecord:
        """The key, if the caller may perform ``action`` on it; another tenant's key is 'not found'."""
        require(ctx, action, ctx.tenant_id)
        record = await run_in_threadpool(store.get, key_id)
        if ctx.role is not Role.ADMIN and record.tenant_id != ctx.tenant_id:
            raise NotFoundError(f"API key {key_id} not found")
        require(ctx, action, record.tenant_id)
        if action is not Action.KEYS_READ:
            require_grant(ctx, record.role)
        return record

    router = APIRouter(
        prefix=prefix,
        tags=["admin"],
        route_class=AdminRoute,
        responses={
            401: {"description": "Missing or invalid key"},
            403: {"description": "The key's role or tenant does not allow this"},
            422: {"description": "Invalid request"},
        },
    )

    @router.post("/keys", status_code=201, response_model=CreatedKey, summary="Create a key")
    async def create_key(ctx: Caller, body: CreateKeyRequest) -> CreatedKey:
        """Create a key; the response is the only place its plaintext appears."""
        require(ctx, Action.KEYS_CREATE, body.tenant_id)
        require_grant(ctx, body.role)
        now = clock()
        record, plaintext = await run_in_threadpool(
            store.create,
            body.name,
            body.tenant_id,
            role=body.role,
            scopes=body.scopes,
            limits=body.limits,
            expires_at=body.resolve(now),
            cache_enabled=body.cache_enabled,
        )
        logger.info(
            "admin.key_created",
            extra={"key_id": str(record.key_id), "tenant_id": record.tenant_id, "role": record.role.value,
                   "actor": _actor(ctx)},
        )  # fmt: skip
        return CreatedKey(**KeyOut.from_record(record, now).model_dump(), key=plaintext)

    @router.get("/keys", response_model=KeyList, summary="List keys")
    async def list_keys(
        ctx: Caller,
        tenant_id: Annotated[
            str | None, Query(max_length=64, description="Only this tenant; default: yours (every tenant for admins).")
        ] = None,
        include_inactive: Annotated[bool, Query(description="Include revoked and expired keys.")] = False,
    ) -> KeyList:
        """List keys, oldest first; never hashes or plaintexts."""
        if tenant_id is None and ctx.role is not Role.ADMIN:
            tenant_id = ctx.tenant_id
        require(ctx, Action.KEYS_READ, tenant_id)
        records = await run_in_threadpool(store.list, tenant_id, include_inactive=include_inactive)
        now = clock()
        return KeyList(data=[KeyOut.from_record(r, now) for r in records])

    @router.get("/keys/{key_id}", response_model=KeyOut, summary="Get a key")
    async def get_key(ctx: Caller, key_id: KeyId) -> KeyOut:
        """One key (never its hash or plaintext)."""
        record = await visible_key(ctx, key_id, Action.KEYS_READ)
        return KeyOut.from_record(record, clock())

    @router.post("/keys/{key_id}/rotate", status_code=201, response_model=RotatedKey, summary="Rotate a key")
    async def rotate_key(
        ctx: Caller, key_id: KeyId, body: Annotated[RotateKeyRequest | None, Body()] = None
    ) -> RotatedKey:
        """Issue a successor; the old key keeps working for ``overlap_s`` seconds."""
        body = body or RotateKeyRequest()
        await visible_key(ctx, key_id, Action.KEYS_ROTATE)
        now = clock()
        keep_expiry = not ({"expires_at", "expires_in_s"} & body.model_fields_set)
        kwargs: dict[str, Any] = {} if keep_expiry else {"expires_at": body.resolve(now)}
        record, plaintext = await run_in_threadpool(store.rotate, key_id, timedelta(seconds=body.overlap_s), **kwargs)
        previous = await run_in_threadpool(store.get, key_id)
        logger.info(
            "admin.key_rotated",
            extra={"key_id": str(key_id), "new_key_id": str(record.key_id), "actor": _actor(ctx)},
        )
        return RotatedKey(
            **KeyOut.from_record(record, now).model_dump(), key=plaintext, previous=KeyOut.from_record(previous, now)
        )

    async def revoke(ctx: AuthContext, key_id: uuid.UUID) -> KeyOut:
        await visible_key(ctx, key_id, Action.KEYS_REVOKE)
        record = await run_in_threadpool(store.revoke, key_id)
        logger.info("admin.key_revoked", extra={"key_id": str(key_id), "actor": _actor(ctx)})
        return KeyOut.from_record(record, clock())

    @router.post("/keys/{key_id}/revoke", response_model=KeyOut, summary="Revoke a key")
    async def revoke_key(ctx: Caller, key_id: KeyId) -> KeyOut:
        """Revoke a key now, on every gateway replica within about a second (idempotent)."""
        return await revoke(ctx, key_id)

    @router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke a key (alias)")
    async def delete_key(ctx: Caller, key_id: KeyId) -> KeyOut:
        """Same as ``POST /keys/{key_id}/revoke``: the row stays, for audit."""
        return await revoke(ctx, key_id)

    return router


__all__ = [
    "ROLE_ALIASES",
    "AdminRoute",
    "CreateKeyRequest",
    "CreatedKey",
    "KeyList",
    "KeyOut",
    "RotateKeyRequest",
    "RotatedKey",
    "bootstrap_context",
    "build_admin_router",
    "openai_error_body",
    "parse_role",
]
