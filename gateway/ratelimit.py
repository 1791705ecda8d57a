"""Rate limits and spend budgets held in Redis, global across gateway replicas.

What is limited
    Each call is checked against up to three dimensions, each with its own
    :class:`~gateway.keys.Limits` (requests/min, tokens/min, daily and
    monthly spend in micro-USD; None is unlimited):

    - ``key``: the key's ``limits``; counters follow the key's rotation
      lineage, so rotating a key does not reset them.
    - ``tenant``: ``tenant_limits[tenant_id]`` or ``default_tenant_limits``.
    - ``merchant`` (when the call names the merchant it serves): the key's
      ``limits.merchant`` or ``default_merchant_limits``; counters are per
      (tenant, merchant), shared by the tenant's keys.

Algorithm
    :meth:`RateLimiter.admit` runs ONE Lua script (``lua/admit.lua``) that
    checks every window and budget and, only if all pass, reserves the request,
    the estimated tokens and the estimated cost. Requests/min and tokens/min
    use fixed one-minute windows smoothed into a sliding estimate
    (``previous * share of the window still ahead + current``), the approach
    of Cloudflare's limiter: two integers per window, no per-request entries,
    bursts at a window edge bounded by the weighting. A budget refuses when
    ``spent + reserved + estimate > budget``, so concurrent requests can never
    overshoot beyond what they reserved; the only overshoot possible is a call
    whose actual cost exceeds its estimate (the overrun is charged at
    settlement). Budget periods are UTC days and UTC calendar months.

    :meth:`RateLimiter.settle` (``lua/settle.lua``) releases the reservation
    and charges what the call really used; :meth:`RateLimiter.release` is
    settling a failed call with zero usage. A reservation that is never
    settled (a crashed replica) is reaped by the next admission after
    ``reservation_ttl_s``. Scripts are sent by EVALSHA and re-loaded on
    NOSCRIPT (after a Redis restart or SCRIPT FLUSH).

    On the request path the scripts go through :class:`gateway.resp.RespClient`
    (one pipelined connection, hiredis parsing) rather than redis-py's pool:
    admissions issued in the same event-loop tick share one write and one
    round trip. :meth:`RateLimiter.settle_nowait` queues a settlement without
    a task: it leaves with the next admission's write, or at most
    ``settle_delay_s`` (5 ms) later, so a busy process sends settlements in batches
    piggybacked on admissions. Holding a settlement back a few milliseconds
    only keeps its reservation a little longer (admission stays
    conservative); :meth:`RateLimiter.flush_settlements` waits for every
    queued one. Clients whose pool is not a plain TCP/TLS/unix connection
    (sentinel, cluster) keep using redis-py.

    Time is the gateway's clock (``clock``, NTP-synchronised across replicas)
    passed into the scripts, so tests can move it.

Redis keys and memory
    ``<prefix>:{<tenant>}:<dimension>:<metric>:<window or period>``; the
    ``{tenant}`` hash tag keeps one call's keys in one Redis Cluster slot.
    Window counters expire after two windows; budget hashes a day after their
    day ends and a week after their month ends.

When Redis is down
    The first failing call switches the process to a local fallback for
    ``fallback.retry_after_s``; then one call probes Redis again, and the
    first success switches back (log events ``ratelimit.redis.down`` and
    ``ratelimit.redis.recovered``, also sent to ``on_event``). The local
    fallback is per process and bounded, never unlimited:

    - requests/min and tokens/min: token buckets holding
      ``fallback.rate_fraction`` of each limit, refilled over a minute (at
      least one request/min). Set the fraction to about 1 / number of
      replicas so the fleet stays near the global limit.
    - budgets: each process may reserve at most ``fallback.budget_fraction``
      of each budget per period while Redis is down; with 0, calls under a
      budget are refused (503 ``rate_limiter_unavailable``). What is spent
      locally, and settlements of reservations made before the outage, are
      queued (bounded) and replayed into Redis when it returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import resources
from typing import Any, Final, Literal, cast

import redis.asyncio
from redis import exceptions as redis_errors

from gateway.errors import (
    BudgetExceededError,
    RateLimiterUnavailableError,
    RateLimitExceededError,
    RequestTooLargeError,
)
from gateway.keys import AuthContext, Limits
from gateway.resp import RespClient, bulk, encode

logger = logging.getLogger(__name__)

WINDOW_MS: Final = 60_000
_WINDOW_TTL_MS: Final = 2 * WINDOW_MS + 1_000

EventHook = Callable[[str, Mapping[str, Any]], None]

# Failures that mean "Redis is not usable now"; anything else (a script
# error) is a bug and propagates.
_REDIS_DOWN_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.MasterDownError,
    OSError,
    TimeoutError,
)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LimitStatus:
    """One limit's state after a check.

    Attributes:
        name: ``<dimension>.<metric>``, e.g. ``key.rpm``, ``merchant.daily_budget``.
        limit: The limit.
        used: Usage including reservations (requests, tokens or micro-USD).
        reset_s: Seconds until usage is back to zero (window) or the period ends (budget).
    """

    name: str
    limit: int
    used: int
    reset_s: float

    @property
    def remaining(self) -> int:
        """What is left, never negative."""
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class RateLimitResult:
    """The outcome of an admission, with what the ``x-ratelimit-*`` headers report.

    Attributes:
        statuses: Every limit that applied.
        retry_after_s: Set when refused: when the same request would pass.
        refused_by: Set when refused: the limit's name.
        fallback: Decided by the local fallback limiter (Redis down).
    """

    statuses: tuple[LimitStatus, ...] = ()
    retry_after_s: float | None = None
    refused_by: str | None = None
    fallback: bool = False

    def tightest(self, metric: str) -> LimitStatus | None:
        """The status of ``metric`` (``rpm``, ``tpm``, ...) with the least remaining."""
        suffix = f".{metric}"
        best: LimitStatus | None = None
        for status in self.statuses:
            if status.name.endswith(suffix) and (
                best is None or (status.remaining, -status.reset_s) < (best.remaining, -best.reset_s)
            ):
                best = status
        return best


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3.5s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    seconds = round(seconds, 3)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def headers(result: RateLimitResult) -> dict[str, str]:
    """OpenAI-style rate-limit headers for a result.

    ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` report the
    tightest requests/min and tokens/min limits that applied (omitted when
    none did); ``retry-after`` (whole seconds) and ``retry-after-ms`` are
    added when the call was refused.
    """
    out: dict[str, str] = {}
    for metric, label in (("rpm", "requests"), ("tpm", "tokens")):
        status = result.tightest(metric)
        if status is None:
            continue
        out[f"x-ratelimit-limit-{label}"] = str(status.limit)
        out[f"x-ratelimit-remaining-{label}"] = str(status.remaining)
        out[f"x-ratelimit-reset-{label}"] = _duration(status.reset_s)
    if result.retry_after_s is not None:
        out["retry-after"] = str(max(1, math.ceil(result.retry_after_s)))
        out["retry-after-ms"] = str(max(1, math.ceil(result.retry_after_s * 1000)))
    return out


@dataclass
class Reservation:
    """What :meth:`RateLimiter.admit` reserved; settle or release it exactly once.

    Attributes:
        reservation_id: Unique id (also the budget reservation's member in Redis).
        tenant_id: The key's tenant.
        lineage_id: The key's rate-limit identity.
        merchant_id: The merchant served, if any.
        estimated_tokens: Tokens reserved.
        estimated_cost_micros: Spend reserved.
        result: The admission's limit states (for headers).
        local: Admitted by the local fallback (Redis was down).
        settled: Whether settle/release already ran.
    """

    reservation_id: str
    tenant_id: str
    lineage_id: uuid.UUID
    merchant_id: str | None
    estimated_tokens: int
    estimated_cost_micros: int
    result: RateLimitResult
    local: bool = False
    settled: bool = False
    token_keys: tuple[str, ...] = ()
    budget_keys: tuple[tuple[str, str, int], ...] = ()  # (hash, zset, expire_at)
    local_token_buckets: tuple[str, ...] = ()
    local_budget_keys: tuple[str, ...] = ()


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Check:
    name: str  # key.rpm, tenant.tpm, merchant.daily_budget, ...
    kind: Literal["w", "b"]
    ident: str  # stable identity across windows (local buckets)
    keys: tuple[str, str]
    limit: int
    amount: int
    a: int  # window: length ms; budget: EXPIREAT (unix s)
    b: int  # window: start ms; budget: period end ms


@dataclass(slots=True)
class _Plan:
    """The checks of one (key lineage, tenant, merchant) in one window, amounts left out.

    Everything but the amounts is the same for every call of that caller
    within a minute, so it is built once per minute and reused.
    """

    index: int  # the window (minute) it was built for
    limits: Limits  # the key's limits it was built from
    checks: list[_Check]  # amounts are placeholders: see with_amounts
    uses: tuple[int, ...]  # per check: 0 one request, 1 tokens, 2 cost
    keys: list[str]
    token_keys: tuple[str, ...]
    budget_keys: tuple[tuple[str, str, int], ...]
    tpm_checks: tuple[_Check, ...]
    # The admission command pre-encoded (RESP): its head (through the keys), then per
    # check the bulk strings before and after the amount.
    head: bytes = b""
    encoded: tuple[tuple[bytes, bytes], ...] = ()

    def with_amounts(self, tokens: int, cost: int) -> list[_Check]:
        amounts = (1, tokens, cost)
        return [
            _Check(c.name, c.kind, c.ident, c.keys, c.limit, amounts[use], c.a, c.b)
            for c, use in zip(self.checks, self.uses, strict=True)
        ]


_PLAN_CACHE_SIZE: Final = 10_000


def _tag(value: str) -> str:
    # Braces would change the Redis Cluster hash tag.
    return value.replace("{", "(").replace("}", ")")


def _day(now_ms: int) -> tuple[str, int, int]:
    start = datetime.fromtimestamp(now_ms / 1000, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    return start.strftime("%Y%m%d"), int(end.timestamp() * 1000), int((end + timedelta(days=1)).timestamp())


def _month(now_ms: int) -> tuple[str, int, int]:
    start = datetime.fromtimestamp(now_ms / 1000, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.strftime("%Y%m"), int(end.timestamp() * 1000), int((end + timedelta(days=7)).timestamp())


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class _Script:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> _Script:
        source = resources.files("gateway").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324 (Redis names scripts by SHA-1)


class _RedisDownError(Exception):
    """Internal: Redis is not usable; use the local fallback."""


# --------------------------------------------------------------------------- local fallback


@dataclass(frozen=True)
class FallbackPolicy:
    """How much one process may admit on its own while Redis is down.

    Attributes:
        rate_fraction: Share of each requests/min and tokens/min limit per
            process (token buckets refilled over a minute).
        budget_fraction: Share of each budget a process may reserve per
            period while Redis is down; 0 refuses calls under a budget.
        retry_after_s: How long to stay on the fallback before probing Redis.
        max_entries: Bound on local buckets and on queued settlements.
    """

    rate_fraction: float = 0.1
    budget_fraction: float = 0.01
    retry_after_s: float = 2.0
    max_entries: int = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _LocalDecision:
    admitted: bool
    statuses: list[LimitStatus] = field(default_factory=list)
    refused: _Check | None = None
    retry_after_s: float = 0.0


class _LocalLimiter:
    """Per-process token buckets and budget allowances (bounded, LRU)."""

    def __init__(self, policy: FallbackPolicy) -> None:
        self.policy = policy
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._budgets: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def _capacity(self, check: _Check) -> float:
        share = check.limit * self.policy.rate_fraction
        if check.name.endswith(".rpm") and check.limit > 0:
            return max(1.0, math.floor(share))
        return float(math.floor(share))

    def _bucket(self, check: _Check, now: float) -> _Bucket:
        capacity = self._capacity(check)
        bucket = self._buckets.get(check.ident)
        if bucket is None:
            bucket = _Bucket(tokens=capacity, updated=now)
            self._buckets[check.ident] = bucket
            while len(self._buckets) > self.policy.max_entries:
                self._buckets.popitem(last=False)
        else:
            rate = capacity / (WINDOW_MS / 1000)
            bucket.tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.updated) * rate)
            bucket.updated = now
            self._buckets.move_to_end(check.ident)
        return bucket

    def _allowance(self, check: _Check) -> int:
        return math.floor(check.limit * self.policy.budget_fraction)

    def admit(self, checks: Sequence[_Check], now: float) -> _LocalDecision:
        with self._lock:
            decision = _LocalDecision(admitted=True)
            worst = 0.0
            for check in checks:
                if check.kind == "w":
                    capacity = self._capacity(check)
                    bucket = self._bucket(check, now)
                    rate = capacity / (WINDOW_MS / 1000)
                    if check.amount > bucket.tokens:
                        if check.amount > capacity or rate <= 0:
                            wait = self.policy.retry_after_s  # only Redis can admit it
                        else:
                            wait = (check.amount - bucket.tokens) / rate
                        if wait > worst:
                            worst, decision.refused = wait, check
                    reset = (capacity - bucket.tokens) / rate if rate > 0 else 0.0
                    used = int(capacity - bucket.tokens)
                    decision.statuses.append(LimitStatus(check.name, int(capacity), used, reset))
                else:
                    spent = self._budgets.get(check.keys[0], 0)
                    allowance = self._allowance(check)
                    # allowance 0 fails closed, even for a call with no cost estimate
                    refuse = allowance <= 0 or spent + check.amount > allowance
                    if refuse and self.policy.retry_after_s > worst:
                        worst, decision.refused = self.policy.retry_after_s, check
                    decision.statuses.append(LimitStatus(check.name, allowance, spent, 0.0))
            if decision.refused is not None:
                decision.admitted = False
                decision.retry_after_s = max(worst, 0.001)
                return decision
            for check in checks:
                if check.kind == "w":
                    self._buckets[check.ident].tokens -= check.amount
                elif check.amount:
                    self._budgets[check.keys[0]] = self._budgets.get(check.keys[0], 0) + check.amount
                    self._budgets.move_to_end(check.keys[0])
                    while len(self._budgets) > self.policy.max_entries:
                        self._budgets.popitem(last=False)
            return decision

    def settle(self, buckets: Iterable[str], token_delta: int, budget_keys: Iterable[str], cost_delta: int) -> None:
        with self._lock:
            for ident in buckets:
                bucket = self._buckets.get(ident)
                if bucket is not None:
                    bucket.tokens -= token_delta  # may go negative: an overrun is paid back by waiting
            for key in budget_keys:
                if key in self._budgets:
                    self._budgets[key] = max(0, self._budgets[key] + cost_delta)


# --------------------------------------------------------------------------- limiter


class RateLimiter:
    """Admit, settle and release calls against limits held in Redis.

    Args:
        redis_client: An async Redis client. Give it short timeouts
            (``socket_timeout``/``socket_connect_timeout`` ~0.5 s) so an
            unreachable Redis switches to the fallback quickly.
        tenant_limits: Limits per tenant id.
        default_tenant_limits: Limits of tenants not in ``tenant_limits``.
        default_merchant_limits: Per-merchant limits for keys that set none.
        key_prefix: Prefix of every Redis key.
        reservation_ttl_s: After this, an unsettled budget reservation is reaped.
        fallback: The local limiter's bounds while Redis is down.
        redis_timeout_s: Upper bound on one script call.
        settle_delay_s: Longest a :meth:`settle_nowait` settlement waits to
            share a write with an admission.
        clock: Seconds since the epoch (tests move it).
        on_event: Metric hook, called with an event name and fields on
            ``ratelimit.redis.down``, ``ratelimit.redis.recovered``,
            ``ratelimit.fallback.admitted``, ``ratelimit.fallback.refused``
            and ``ratelimit.pending.dropped``.
    """

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        *,
        tenant_limits: Mapping[str, Limits] | None = None,
        default_tenant_limits: Limits | None = None,
        default_merchant_limits: Limits | None = None,
        key_prefix: str = "gateway:rl",
        reservation_ttl_s: float = 600.0,
        fallback: FallbackPolicy | None = None,
        redis_timeout_s: float = 0.5,
        settle_delay_s: float = 0.005,
        clock: Callable[[], float] = time.time,
        on_event: EventHook | None = None,
    ) -> None:
        self._redis = redis_client
        self._resp = RespClient.from_redis(
            redis_client, reply_timeout_s=max(redis_timeout_s, 0.05), lazy_delay_s=settle_delay_s
        )
        self._tenant_limits = dict(tenant_limits or {})
        self._default_tenant_limits = default_tenant_limits
        self._default_merchant_limits = default_merchant_limits
        self._prefix = key_prefix
        self._reservation_ttl_ms = int(reservation_ttl_s * 1000)
        self._fallback = fallback or FallbackPolicy()
        self._local = _LocalLimiter(self._fallback)
        self._redis_timeout_s = redis_timeout_s
        self._clock = clock
        self._on_event = on_event
        self._admit_script = _Script.load("admit")
        self._settle_script = _Script.load("settle")
        self._down = False
        self._probe_at = 0.0
        self._pending: deque[tuple[list[str], list[str | int]]] = deque()
        self._drain_lock = asyncio.Lock()
        self._settling: set[asyncio.Future[Any]] = set()
        self._plans: dict[tuple[uuid.UUID, str, str | None], _Plan] = {}

    @property
    def redis_available(self) -> bool:
        """False while the process runs on the local fallback."""
        return not self._down

    # ----------------------------------------------------------------- planning

    def _dimensions(self, ctx: AuthContext, merchant_id: str | None) -> list[tuple[str, str, Limits]]:
        dims: list[tuple[str, str, Limits]] = [("key", f"k:{ctx.lineage_id}", ctx.limits)]
        tenant = self._tenant_limits.get(ctx.tenant_id, self._default_tenant_limits)
        if tenant is not None:
            dims.append(("tenant", "t", tenant))
        if merchant_id is not None:
            merchant = ctx.limits.merchant or self._default_merchant_limits
            if merchant is not None:
                dims.append(("merchant", f"m:{_tag(merchant_id)}", merchant))
        return dims

    def _plan(self, ctx: AuthContext, merchant_id: str | None, tokens: int, cost: int, now_ms: int) -> list[_Check]:
        base = f"{self._prefix}:{{{_tag(ctx.tenant_id)}}}"
        window_start = now_ms - now_ms % WINDOW_MS
        index = now_ms // WINDOW_MS
        day, day_end, day_expire = _day(now_ms)
        month, month_end, month_expire = _month(now_ms)
        checks: list[_Check] = []
        for dim, ident, limits in self._dimensions(ctx, merchant_id):
            root = f"{base}:{ident}"
            for metric, limit, amount in (("rpm", limits.rpm, 1), ("tpm", limits.tpm, tokens)):
                if limit is not None:
                    keys = (f"{root}:{metric}:{index}", f"{root}:{metric}:{index - 1}")
                    checks.append(
                        _Check(f"{dim}.{metric}", "w", f"{root}:{metric}", keys, limit, amount, WINDOW_MS, window_start)
                    )
            budgets = (
                ("daily_budget", limits.daily_budget_micros, f"d:{day}", day_end, day_expire),
                ("monthly_budget", limits.monthly_budget_micros, f"M:{month}", month_end, month_expire),
            )
            for metric, limit, period, end_ms, expire_at in budgets:
                if limit is not None:
                    keys = (f"{root}:{period}", f"{root}:{period}:resv")
                    checks.append(_Check(f"{dim}.{metric}", "b", keys[0], keys, limit, cost, expire_at, end_ms))
        return checks

    def _cached_plan(self, ctx: AuthContext, merchant_id: str | None, now_ms: int) -> _Plan:
        index = now_ms // WINDOW_MS
        cache_key = (ctx.lineage_id, ctx.tenant_id, merchant_id)
        plan = self._plans.get(cache_key)
        if plan is not None and plan.index == index and (plan.limits is ctx.limits or plan.limits == ctx.limits):
            return plan
        checks = self._plan(ctx, merchant_id, 0, 0, now_ms)
        uses = tuple(0 if c.name.endswith(".rpm") else 1 if c.kind == "w" else 2 for c in checks)
        plan = _Plan(
            index=index,
            limits=ctx.limits,
            checks=checks,
            uses=uses,
            keys=[k for check in checks for k in check.keys],
            token_keys=tuple(c.keys[0] for c in checks if c.name.endswith(".tpm")),
            budget_keys=tuple((c.keys[0], c.keys[1], c.a) for c in checks if c.kind == "b"),
            tpm_checks=tuple(c for c in checks if c.name.endswith(".tpm")),
        )
        if checks:
            count = 3 + len(plan.keys) + 4 + 5 * len(checks)
            fixed: list[str | int] = ["EVALSHA", self._admit_script.sha, len(plan.keys), *plan.keys]
            plan.head = b"*%d\r\n" % count + b"".join(bulk(arg) for arg in fixed)
            plan.encoded = tuple((bulk(c.kind) + bulk(c.limit), bulk(c.a) + bulk(c.b)) for c in checks)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()  # a minute's worth of callers at most; rebuilding is cheap
        self._plans[cache_key] = plan
        return plan

    # ----------------------------------------------------------------- admission

    async def admit(
        self,
        ctx: AuthContext,
        merchant_id: str | None = None,
        estimated_tokens: int = 0,
        estimated_cost_micros: int = 0,
    ) -> Reservation:
        """Check every applicable limit and reserve the call, atomically.

        Args:
            ctx: The authenticated key.
            merchant_id: The merchant the call serves, if any.
            estimated_tokens: Upper estimate of prompt + completion tokens.
            estimated_cost_micros: Upper estimate of the call's cost (micro-USD).

        Returns:
            The reservation, to settle or release when the call ends.

        Raises:
            RequestTooLargeError: The estimate exceeds a tokens/min limit outright.
            RateLimitExceededError: A requests/min or tokens/min window is full.
            BudgetExceededError: A daily or monthly budget would be exceeded.
            RateLimiterUnavailableError: Redis is down and the call is under a
                budget the fallback may not spend.
        """
        if estimated_tokens < 0 or estimated_cost_micros < 0:
            raise ValueError("estimates must not be negative")
        now_ms = int(self._clock() * 1000)
        plan = self._cached_plan(ctx, merchant_id, now_ms)
        for check in plan.tpm_checks:
            if estimated_tokens > check.limit:
                raise RequestTooLargeError(
                    f"Request too large: {estimated_tokens} tokens requested, {check.name} limit is {check.limit}"
                    " tokens per minute. Reduce the input or max_tokens.",
                    param="max_tokens",
                )
        reservation = Reservation(
            reservation_id=f"{random.getrandbits(128):032x}",  # unique per process PRNG; not a secret
            tenant_id=ctx.tenant_id,
            lineage_id=ctx.lineage_id,
            merchant_id=merchant_id,
            estimated_tokens=estimated_tokens,
            estimated_cost_micros=estimated_cost_micros,
            result=RateLimitResult(),
        )
        checks = plan.checks
        if not checks:
            return reservation
        amounts = (1, estimated_tokens, estimated_cost_micros)
        head: list[str | int] = [now_ms, reservation.reservation_id, now_ms + self._reservation_ttl_ms, len(checks)]
        if self._resp is not None:
            # Only the amounts and the call's own values are encoded per call.
            parts = [plan.head, *map(bulk, head)]
            for (before, after), use in zip(plan.encoded, plan.uses, strict=True):
                parts += (before, bulk(amounts[use]), after)
            call: Sequence[str | int] | bytes = b"".join(parts)
        else:
            args = head
            for check, use in zip(checks, plan.uses, strict=True):
                args.extend((check.kind, check.limit, amounts[use], check.a, check.b))
            call = args
        try:
            reply = await self._run(self._admit_script, plan.keys, call)
        except _RedisDownError:
            return self._admit_local(reservation, plan.with_amounts(estimated_tokens, estimated_cost_micros))
        values = [int(v) for v in reply]
        statuses = tuple(
            LimitStatus(check.name, check.limit, values[3 + 2 * i], values[4 + 2 * i] / 1000)
            for i, check in enumerate(checks)
        )
        if values[0] != 1:
            refused = plan.with_amounts(estimated_tokens, estimated_cost_micros)[values[1] - 1]
            result = RateLimitResult(statuses, retry_after_s=values[2] / 1000, refused_by=refused.name)
            raise self._refusal(refused, result)
        reservation.result = RateLimitResult(statuses)
        reservation.token_keys = plan.token_keys
        reservation.budget_keys = plan.budget_keys
        return reservation

    def _refusal(self, check: _Check, result: RateLimitResult) -> RateLimitExceededError:
        status = next(s for s in result.statuses if s.name == check.name)
        retry = result.retry_after_s or 0.0
        if check.kind == "b":
            return BudgetExceededError(
                f"Spend budget {check.name} reached: {status.used} of {status.limit} micro-USD spent or reserved;"
                f" this request needs {check.amount}. Try again in {_duration(retry)}.",
                limit=check.name,
                retry_after=retry,
                headers=headers(result),
            )
        unit = "tokens" if check.name.endswith(".tpm") else "requests"
        return RateLimitExceededError(
            f"Rate limit reached for {check.name} ({unit} per minute): limit {status.limit}, used {status.used},"
            f" requested {check.amount}. Try again in {_duration(retry)}.",
            limit=check.name,
            retry_after=retry,
            headers=headers(result),
        )

    def _admit_local(self, reservation: Reservation, checks: Sequence[_Check]) -> Reservation:
        decision = self._local.admit(checks, self._clock())
        if not decision.admitted:
            assert decision.refused is not None
            refused = decision.refused
            self._emit("ratelimit.fallback.refused", limit=refused.name, tenant_id=reservation.tenant_id)
            result = RateLimitResult(
                tuple(decision.statuses), decision.retry_after_s, refused_by=refused.name, fallback=True
            )
            if refused.kind == "b":
                raise RateLimiterUnavailableError(
                    f"Spend for {refused.name} cannot be verified while the rate-limit store is unavailable"
                    " and this process's fallback allowance is used up. Try again shortly.",
                    headers=headers(result),
                )
            raise self._refusal(refused, result)
        self._emit("ratelimit.fallback.admitted", tenant_id=reservation.tenant_id)
        reservation.local = True
        reservation.result = RateLimitResult(tuple(decision.statuses), fallback=True)
        reservation.local_token_buckets = tuple(c.ident for c in checks if c.name.endswith(".tpm"))
        reservation.local_budget_keys = tuple(c.keys[0] for c in checks if c.kind == "b")
        reservation.budget_keys = tuple((c.keys[0], c.keys[1], c.a) for c in checks if c.kind == "b")
        return reservation

    # ----------------------------------------------------------------- settlement

    async def settle(self, reservation: Reservation, actual_tokens: int, actual_cost_micros: int) -> None:
        """Reconcile a reservation with the call's real usage (idempotent per object).

        Unused tokens and spend are released; an overrun is charged. While
        Redis is down the settlement is queued and replayed on recovery.
        Returns once Redis applied it (or it was queued for replay).

        Args:
            reservation: From :meth:`admit`.
            actual_tokens: Tokens the call really used.
            actual_cost_micros: What the call really cost (micro-USD).
        """
        call = self._settlement(reservation, actual_tokens, actual_cost_micros)
        if call is not None:
            await self._settle_redis(*call)

    def settle_nowait(self, reservation: Reservation, actual_tokens: int, actual_cost_micros: int) -> None:
        """:meth:`settle` without waiting: queued for the next write to Redis (request path).

        The settlement leaves with the next admission's write or at most
        ``settle_delay_s`` later; failures are handled as in :meth:`settle`
        (queued for replay while Redis is down). :meth:`flush_settlements`
        waits for every queued settlement.
        """
        call = self._settlement(reservation, actual_tokens, actual_cost_micros)
        if call is None:
            return
        keys, args = call
        resp = self._resp
        if resp is None or self._down:  # the slow paths, as a task: redis-py, or probing while down
            self._track(asyncio.ensure_future(self._settle_redis(keys, args)))
            return
        waiter = resp.send("EVALSHA", self._settle_script.sha, len(keys), *keys, *args, urgent=False)
        self._settling.add(waiter)
        waiter.add_done_callback(partial(self._settled, keys, args))

    async def flush_settlements(self) -> None:
        """Send every queued settlement now and wait until each is applied or queued for replay."""
        while self._settling:
            if self._resp is not None:
                self._resp.flush()
            # wait, not gather: a cancelled caller must not cancel settlements already written.
            await asyncio.wait(list(self._settling))

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._settling.add(future)
        future.add_done_callback(self._settling.discard)

    def _settled(self, keys: list[str], args: list[str | int], waiter: asyncio.Future[Any]) -> None:
        self._settling.discard(waiter)
        if waiter.cancelled():  # nobody cancels these; if it happens, the outcome is unknown
            logger.warning("ratelimit.settle_cancelled")
            return
        exc = waiter.exception()
        if exc is None:
            if self._pending and not self._drain_lock.locked():
                self._track(asyncio.ensure_future(self.flush_pending()))
            return
        if isinstance(exc, redis_errors.NoScriptError):  # Redis restarted or flushed: load, then retry
            self._track(asyncio.ensure_future(self._settle_redis(keys, args)))
        elif isinstance(exc, _REDIS_DOWN_ERRORS):
            self._mark_down(exc)
            self._enqueue(keys, args)
        else:  # a script error is a bug: say so, never fail a request over it
            logger.error("ratelimit.settle_failed", exc_info=exc)

    async def _settle_redis(self, keys: list[str], args: list[str | int]) -> None:
        try:
            await self._run(self._settle_script, keys, args)
        except _RedisDownError:
            self._enqueue(keys, args)

    def _settlement(
        self, reservation: Reservation, actual_tokens: int, actual_cost_micros: int
    ) -> tuple[list[str], list[str | int]] | None:
        """Mark the reservation settled, settle the local part; the Redis script call, if any."""
        if reservation.settled:
            return None
        reservation.settled = True
        token_delta = actual_tokens - reservation.estimated_tokens
        if reservation.local:
            self._local.settle(
                reservation.local_token_buckets,
                token_delta,
                reservation.local_budget_keys,
                actual_cost_micros - reservation.estimated_cost_micros,
            )
            if actual_cost_micros <= 0 or not reservation.budget_keys:
                return None
            # Nothing was reserved in Redis: record the spend as a plain charge.
            return self._settle_call("", (), 0, reservation.budget_keys, actual_cost_micros)
        if reservation.token_keys or reservation.budget_keys:
            return self._settle_call(
                reservation.reservation_id,
                reservation.token_keys,
                token_delta,
                reservation.budget_keys,
                actual_cost_micros,
            )
        return None

    async def release(self, reservation: Reservation) -> None:
        """Give back everything a failed call reserved (its request still counts)."""
        await self.settle(reservation, 0, 0)

    @staticmethod
    def _settle_call(
        rid: str,
        token_keys: Sequence[str],
        token_delta: int,
        budget_keys: Sequence[tuple[str, str, int]],
        cost: int,
    ) -> tuple[list[str], list[str | int]]:
        keys = [*token_keys]
        args: list[str | int] = [rid, len(token_keys), len(budget_keys)]
        for _ in token_keys:
            args.extend((token_delta, _WINDOW_TTL_MS))
        for hash_key, zset_key, expire_at in budget_keys:
            keys.extend((hash_key, zset_key))
            args.extend((cost, expire_at))
        return keys, args

    def _enqueue(self, keys: list[str], args: list[str | int]) -> None:
        if len(self._pending) >= self._fallback.max_entries:
            self._pending.popleft()
            self._emit("ratelimit.pending.dropped", queued=len(self._pending))
        self._pending.append((keys, args))

    @property
    def pending_settlements(self) -> int:
        """Settlements waiting for Redis to return."""
        return len(self._pending)

    async def flush_pending(self) -> int:
        """Replay queued settlements into Redis; return how many were applied."""
        applied = 0
        async with self._drain_lock:
            while self._pending:
                keys, args = self._pending[0]
                try:
                    await self._call(self._settle_script, keys, args)
                except _REDIS_DOWN_ERRORS as exc:
                    self._mark_down(exc)
                    break
                self._pending.popleft()
                applied += 1
        return applied

    # ----------------------------------------------------------------- redis plumbing

    async def _call(self, script: _Script, keys: Sequence[str], args: Sequence[str | int] | bytes) -> Any:
        """Run a script; ``args`` may be the whole command pre-encoded (lean client only)."""
        resp = self._resp
        if resp is not None:
            command = args if isinstance(args, bytes) else encode(("EVALSHA", script.sha, len(keys), *keys, *args))
            try:
                # asyncio.timeout, not wait_for: no extra task per call on the request path.
                async with asyncio.timeout(self._redis_timeout_s):
                    try:
                        return await resp.send_encoded(command)
                    except redis_errors.NoScriptError:
                        await resp.send("SCRIPT", "LOAD", script.source)
                        return await resp.send_encoded(command)
            except TimeoutError:
                # A Redis this slow is not usable; a fresh connection is the probe's to make.
                resp.disconnect(redis_errors.TimeoutError(f"no reply within {self._redis_timeout_s:g}s"))
                raise
        assert not isinstance(args, bytes), "pre-encoded commands need the lean client"
        async with asyncio.timeout(self._redis_timeout_s):
            try:
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                await cast(Awaitable[Any], self._redis.script_load(script.source))
                return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    async def _run(self, script: _Script, keys: Sequence[str], args: Sequence[str | int] | bytes) -> Any:
        if self._down:
            now = time.monotonic()
            if now < self._probe_at:
                raise _RedisDownError
            self._probe_at = now + self._fallback.retry_after_s  # one probe per interval
        try:
            result = await self._call(script, keys, args)
        except _REDIS_DOWN_ERRORS as exc:
            self._mark_down(exc)
            raise _RedisDownError from exc
        if self._down:
            self._down = False
            self._emit("ratelimit.redis.recovered", pending=len(self._pending), level=logging.INFO)
        if self._pending:
            await self.flush_pending()
        return result

    async def aclose(self) -> None:
        """Send queued settlements, then close the limiter's own connection (not the redis-py client)."""
        await self.flush_settlements()
        if self._resp is not None:
            await self._resp.aclose()

    def _mark_down(self, exc: BaseException) -> None:
        self._probe_at = time.monotonic() + self._fallback.retry_after_s
        if not self._down:
            self._down = True
            self._emit(
                "ratelimit.redis.down",
                error=f"{type(exc).__name__}: {exc}",
                rate_fraction=self._fallback.rate_fraction,
                budget_fraction=self._fallback.budget_fraction,
                level=logging.WARNING,
            )

    def _emit(self, event: str, level: int = logging.DEBUG, **fields: Any) -> None:
        logger.log(level, event, extra=fields)
        if self._on_event is not None:
            try:
                self._on_event(event, fields)
            except Exception:  # a metrics hook must never break admission
                logger.exception("ratelimit.event_hook_failed", extra={"hook_event": event})


__all__ = [
    "WINDOW_MS",
    "FallbackPolicy",
    "LimitStatus",
    "RateLimitResult",
    "RateLimiter",
    "Reservation",
    "headers",
]
