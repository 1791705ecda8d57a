"""Rate limits and budgets on the real Redis: windows, reservations, races, headers, Redis down."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from core.embedded import EmbeddedRedis
from gateway.errors import (
    BudgetExceededError,
    RateLimiterUnavailableError,
    RateLimitExceededError,
    RequestTooLargeError,
)
from gateway.keys import Limits
from gateway.ratelimit import FallbackPolicy, RateLimiter, RateLimitResult, Reservation, headers
from tests.conftest import short_tmp
from tests.gateway.conftest import ManualClock, make_ctx

T = TypeVar("T")

# A minute boundary well in the future, so budget keys' EXPIREAT lies ahead.
START = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@asynccontextmanager
async def limiter_on(url: str, clock: ManualClock, **kwargs: Any) -> AsyncIterator[RateLimiter]:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    limiter = RateLimiter(client, clock=clock.seconds, **kwargs)
    try:
        yield limiter
    finally:
        await limiter.aclose()
        await client.aclose()


async def refused(coro: Coroutine[Any, Any, Reservation]) -> RateLimitExceededError:
    with pytest.raises(RateLimitExceededError) as info:
        await coro
    return info.value


def budget_state(client: redis.Redis, pattern: str) -> tuple[int, int]:
    """(spent, reserved) of the one budget hash matching ``pattern``."""
    [key] = [k for k in client.scan_iter(match=pattern) if not k.endswith(b":resv")]
    values = client.hgetall(key)
    return int(values.get(b"spent", 0)), int(values.get(b"reserved", 0))


# --------------------------------------------------------------------------- requests and tokens per minute


def test_requests_per_minute_sliding_window(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"rpm": 3})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            for _ in range(3):
                await limiter.admit(ctx)
            error = await refused(limiter.admit(ctx))
            assert (error.status, error.code, error.limit, error.type) == (
                429,
                "rate_limit_exceeded",
                "key.rpm",
                "requests",
            )
            # Three requests fill the current window: the earliest a 4th fits is 20 s into the next
            # window, when the previous window's weight (40/60) leaves 3 * 2/3 = 2 in use.
            assert error.retry_after == pytest.approx(80.0)
            assert error.headers["retry-after"] == "80"
            assert error.headers["x-ratelimit-remaining-requests"] == "0"
            assert error.to_openai()["error"]["code"] == "rate_limit_exceeded"

            clock.advance(seconds=79)
            error = await refused(limiter.admit(ctx))
            assert error.retry_after == pytest.approx(1.0)
            clock.advance(seconds=1)
            await limiter.admit(ctx)
            await refused(limiter.admit(ctx))

            # Two idle windows later everything is available again.
            clock.advance(minutes=2)
            for _ in range(3):
                await limiter.admit(ctx)

    run(main)


def test_tokens_per_minute_reserve_and_reconcile(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"tpm": 1000})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            first = await limiter.admit(ctx, estimated_tokens=600)
            error = await refused(limiter.admit(ctx, estimated_tokens=500))
            assert (error.limit, error.type) == ("key.tpm", "tokens")
            await limiter.settle(first, actual_tokens=200, actual_cost_micros=0)  # 400 released
            second = await limiter.admit(ctx, estimated_tokens=500)
            assert second.result.tightest("tpm").used == 700  # type: ignore[union-attr]
            await limiter.release(second)
            third = await limiter.admit(ctx, estimated_tokens=800)
            assert third.result.tightest("tpm").remaining == 0  # type: ignore[union-attr]
            # An overrun is charged: 200 + 800 reserved, 900 really used -> window holds 1100.
            await limiter.settle(third, actual_tokens=900, actual_cost_micros=0)
            await refused(limiter.admit(ctx, estimated_tokens=1))

            with pytest.raises(RequestTooLargeError) as too_large:
                await limiter.admit(ctx, estimated_tokens=1001)
            assert too_large.value.status == 413 and too_large.value.param == "max_tokens"

    run(main)


def test_merchant_limits_are_separate_from_key_limits(
    redis_url: str, redis_client: redis.Redis, clock: ManualClock
) -> None:
    key_a = make_ctx("tenant-x", limits={"rpm": 100, "merchant": {"rpm": 2}})
    key_b = make_ctx("tenant-x", limits={"rpm": 100, "merchant": {"rpm": 2}})
    other_tenant = make_ctx("tenant-y", limits={"rpm": 100, "merchant": {"rpm": 2}})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            await limiter.admit(key_a, "m1")
            await limiter.admit(key_b, "m1")  # a merchant's counters are shared by the tenant's keys
            error = await refused(limiter.admit(key_a, "m1"))
            assert error.limit == "merchant.rpm"
            await refused(limiter.admit(key_b, "m1"))
            await limiter.admit(key_a, "m2")  # another merchant is unaffected
            await limiter.admit(key_a)  # so is the key when it serves no merchant
            await limiter.admit(other_tenant, "m1")  # and the same merchant under another tenant

            # The key's own limit binds across merchants.
            tight_key = make_ctx("tenant-x", limits={"rpm": 2, "merchant": {"rpm": 10}})
            await limiter.admit(tight_key, "m3")
            await limiter.admit(tight_key, "m4")
            assert (await refused(limiter.admit(tight_key, "m5"))).limit == "key.rpm"

    run(main)


def test_default_merchant_and_tenant_limits(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    keys = [make_ctx("tenant-z", limits={"rpm": 100}) for _ in range(3)]

    async def main() -> None:
        async with limiter_on(
            redis_url,
            clock,
            tenant_limits={"tenant-z": Limits(rpm=4)},
            default_merchant_limits=Limits(rpm=1),
        ) as limiter:
            await limiter.admit(keys[0], "m1")
            assert (await refused(limiter.admit(keys[1], "m1"))).limit == "merchant.rpm"
            for ctx in keys:
                await limiter.admit(ctx)
            # Four requests admitted for the tenant (one refusal reserved nothing).
            assert (await refused(limiter.admit(keys[2]))).limit == "tenant.rpm"
            unlimited = make_ctx("tenant-free")
            for _ in range(20):
                reservation = await limiter.admit(unlimited)
            assert reservation.result == RateLimitResult()  # no limit applies: no headers, no Redis call

    run(main)


def test_headers_report_the_tightest_limit(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"rpm": 10, "tpm": 1000, "merchant": {"rpm": 2}})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            reservation = await limiter.admit(ctx, estimated_tokens=100)
            assert headers(reservation.result) == {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "9",
                "x-ratelimit-reset-requests": "2m0s",
                "x-ratelimit-limit-tokens": "1000",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "2m0s",
            }
            clock.advance(seconds=90)
            served = await limiter.admit(ctx, "m1", estimated_tokens=50)
            got = headers(served.result)
            # The merchant's 2/min is tighter than the key's 10/min.
            assert (got["x-ratelimit-limit-requests"], got["x-ratelimit-remaining-requests"]) == ("2", "1")
            # Previous window: 1 request and 100 tokens weighted by 30/60; current: 1 and 50.
            assert got["x-ratelimit-remaining-tokens"] == str(1000 - 50 - 50)
            assert got["x-ratelimit-reset-requests"] == "1m30s"
            assert "retry-after" not in got

    run(main)


# --------------------------------------------------------------------------- budgets


def test_budget_race_never_overshoots(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    budget = 1_000_000
    ctx = make_ctx(limits={"daily_budget_micros": budget, "monthly_budget_micros": 10 * budget})

    async def main() -> tuple[list[Reservation], list[BaseException]]:
        # Two limiters on separate connections stand for two replicas.
        async with limiter_on(redis_url, clock) as one, limiter_on(redis_url, clock) as two:
            first = await one.admit(ctx, estimated_cost_micros=500_000)
            await one.settle(first, 0, 880_000)  # an earlier call spent 880k: 120k left
            calls = [(one if i % 2 else two).admit(ctx, estimated_cost_micros=7_000) for i in range(50)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        admitted = [o for o in outcomes if isinstance(o, Reservation)]
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        return admitted, errors

    admitted, errors = run(main)
    assert 880_000 + sum(r.estimated_cost_micros for r in admitted) <= budget
    assert len(admitted) == 120_000 // 7_000  # 17: atomic admission leaves nothing on the table either
    assert len(errors) == 50 - len(admitted)
    assert all(isinstance(e, BudgetExceededError) for e in errors)
    error = errors[0]
    assert isinstance(error, BudgetExceededError)
    assert (error.status, error.code, error.type, error.limit) == (
        429,
        "budget_exceeded",
        "insufficient_quota",
        "key.daily_budget",
    )
    # Only reservations block: retry soon rather than at midnight.
    assert error.retry_after == pytest.approx(1.0)
    assert budget_state(redis_client, "*:d:20310314") == (880_000, 17 * 7_000)


def test_queued_settlements_add_up_after_a_burst(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"tpm": 10_000_000, "daily_budget_micros": 10_000_000})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            reservations = await asyncio.gather(
                *(limiter.admit(ctx, "m1", estimated_tokens=500, estimated_cost_micros=5_000) for _ in range(200))
            )
            for i, reservation in enumerate(reservations):
                limiter.settle_nowait(reservation, actual_tokens=i, actual_cost_micros=2 * i)
            limiter.settle_nowait(reservations[0], actual_tokens=999, actual_cost_micros=999)  # settled already
            await limiter.flush_settlements()
            assert limiter.pending_settlements == 0

    run(main)
    expected = sum(range(200))
    [tpm] = [k for k in redis_client.scan_iter(match="*:k:*:tpm:*") if redis_client.get(k) not in (None, b"0")]
    assert int(redis_client.get(tpm) or 0) == expected
    assert budget_state(redis_client, "*:k:*:d:*") == (2 * expected, 0)


def test_queued_settlements_interleaved_with_admissions_never_overshoot(
    redis_url: str, redis_client: redis.Redis, clock: ManualClock
) -> None:
    budget = 1_000_000
    ctx = make_ctx(limits={"daily_budget_micros": budget})

    async def worker(limiter: RateLimiter, charged: list[int]) -> None:
        for i in range(40):
            try:
                reservation = await limiter.admit(ctx, estimated_cost_micros=9_000)
            except BudgetExceededError:
                await asyncio.sleep(0)
                continue
            await asyncio.sleep(0)
            cost = 7_000 if i % 2 else 9_000
            charged.append(cost)
            limiter.settle_nowait(reservation, 0, cost)

    async def main() -> list[int]:
        charged: list[int] = []
        async with limiter_on(redis_url, clock) as one, limiter_on(redis_url, clock) as two:
            await asyncio.gather(*(worker(one if i % 2 else two, charged) for i in range(16)))
            await one.flush_settlements()
            await two.flush_settlements()
            while True:  # whatever the burst left, taken one call at a time
                try:
                    reservation = await one.admit(ctx, estimated_cost_micros=9_000)
                except BudgetExceededError:
                    break
                charged.append(9_000)
                await one.settle(reservation, 0, 9_000)
        return charged

    charged = run(main)
    spent, reserved = budget_state(redis_client, "*:d:*")
    assert reserved == 0
    assert spent == sum(charged)
    assert budget - 9_000 < spent <= budget  # no overshoot, and nothing left on the table


def test_settle_and_release_reconcile_budgets(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"daily_budget_micros": 100_000, "merchant": {"monthly_budget_micros": 1_000_000}})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            cheaper = await limiter.admit(ctx, "m1", estimated_cost_micros=10_000)
            assert budget_state(redis_client, "*:k:*:d:*") == (0, 10_000)
            await limiter.settle(cheaper, actual_tokens=0, actual_cost_micros=4_000)
            await limiter.settle(cheaper, actual_tokens=0, actual_cost_micros=4_000)  # once only
            assert budget_state(redis_client, "*:k:*:d:*") == (4_000, 0)
            assert budget_state(redis_client, "*:m:m1:M:*") == (4_000, 0)

            failed = await limiter.admit(ctx, "m1", estimated_cost_micros=50_000)
            await limiter.release(failed)
            assert budget_state(redis_client, "*:k:*:d:*") == (4_000, 0)

            overrun = await limiter.admit(ctx, "m1", estimated_cost_micros=1_000)
            await limiter.settle(overrun, actual_tokens=0, actual_cost_micros=3_000)
            assert budget_state(redis_client, "*:k:*:d:*") == (7_000, 0)
            assert budget_state(redis_client, "*:m:m1:M:*") == (7_000, 0)

    run(main)


def test_budget_periods_reset(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    clock.now = datetime(2031, 3, 31, 23, 0, tzinfo=UTC)
    ctx = make_ctx(limits={"daily_budget_micros": 10_000, "monthly_budget_micros": 15_000})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            spent = await limiter.admit(ctx, estimated_cost_micros=10_000)
            await limiter.settle(spent, 0, 10_000)
            error = await refused(limiter.admit(ctx, estimated_cost_micros=1))
            assert isinstance(error, BudgetExceededError) and error.limit == "key.daily_budget"
            assert error.retry_after == pytest.approx(3600.0)  # midnight UTC
            assert error.headers["retry-after"] == "3600"

            clock.advance(hours=1)  # 1 April: a new day and a new month
            spent = await limiter.admit(ctx, estimated_cost_micros=10_000)
            await limiter.settle(spent, 0, 10_000)
            clock.advance(days=1)
            spent = await limiter.admit(ctx, estimated_cost_micros=5_000)
            await limiter.settle(spent, 0, 5_000)
            error = await refused(limiter.admit(ctx, estimated_cost_micros=1))
            assert error.limit == "key.monthly_budget"
            first_of_may = datetime(2031, 5, 1, tzinfo=UTC)
            assert error.retry_after == pytest.approx((first_of_may - clock.now).total_seconds())

    run(main)


def test_unsettled_reservations_are_reaped(redis_url: str, redis_client: redis.Redis, clock: ManualClock) -> None:
    ctx = make_ctx(limits={"daily_budget_micros": 1_000_000})

    async def main() -> None:
        async with limiter_on(redis_url, clock, reservation_ttl_s=60) as limiter:
            lost = await limiter.admit(ctx, estimated_cost_micros=900_000)  # its replica "crashes"
            await refused(limiter.admit(ctx, estimated_cost_micros=200_000))
            clock.advance(seconds=61)
            await limiter.admit(ctx, estimated_cost_micros=200_000)
            assert budget_state(redis_client, "*:d:*") == (0, 200_000)
            # A late settlement still charges the real spend, without releasing twice.
            await limiter.settle(lost, actual_tokens=0, actual_cost_micros=100_000)
            assert budget_state(redis_client, "*:d:*") == (100_000, 200_000)

    run(main)


def test_redis_keys_expire_and_scripts_survive_a_flush(
    redis_url: str, redis_client: redis.Redis, clock: ManualClock
) -> None:
    ctx = make_ctx(limits={"rpm": 10, "tpm": 100, "daily_budget_micros": 10, "monthly_budget_micros": 10})

    async def main() -> None:
        async with limiter_on(redis_url, clock) as limiter:
            await limiter.admit(ctx, "m1", estimated_tokens=5, estimated_cost_micros=1)
            redis_client.script_flush()  # as after a Redis restart: EVALSHA gets NOSCRIPT
            await limiter.admit(ctx, "m1", estimated_tokens=5, estimated_cost_micros=1)

    run(main)
    keys = list(redis_client.scan_iter(match="gateway:rl:*"))
    assert len(keys) >= 6
    for key in keys:
        ttl_ms = redis_client.pttl(key)
        assert ttl_ms > 0, key  # nothing lives forever
        if b":rpm:" in key or b":tpm:" in key:
            assert ttl_ms <= 121_000


# --------------------------------------------------------------------------- Redis down


def test_fallback_when_redis_is_down_is_bounded_and_recovers(clock: ManualClock) -> None:
    folder = short_tmp("cpgw-redis")
    server = EmbeddedRedis(folder)
    url = server.start()
    events: list[str] = []
    ctx = make_ctx(limits={"rpm": 100, "daily_budget_micros": 1_000_000})
    policy = FallbackPolicy(rate_fraction=0.1, budget_fraction=0.01, retry_after_s=0.2)

    async def main() -> None:
        async with limiter_on(url, clock, fallback=policy, on_event=lambda name, _: events.append(name)) as limiter:
            healthy = await limiter.admit(ctx, estimated_cost_micros=1_000)
            assert not healthy.result.fallback
            server.stop()

            # Requests: this process may admit 10% of 100/min on its own, then it refuses.
            admitted = []
            for _ in range(10):
                admitted.append(await limiter.admit(ctx, estimated_cost_micros=100))
            assert all(r.local and r.result.fallback for r in admitted)
            assert not limiter.redis_available
            error = await refused(limiter.admit(ctx))
            assert error.limit == "key.rpm" and error.status == 429
            assert "ratelimit.redis.down" in events

            # Budgets: 1% of the daily budget (10 000 micro-USD) per process, then 503.
            clock.advance(minutes=5)  # refill the local request bucket
            first = await limiter.admit(ctx, estimated_cost_micros=4_000)
            await limiter.admit(ctx, estimated_cost_micros=4_000)
            with pytest.raises(RateLimiterUnavailableError) as unavailable:
                await limiter.admit(ctx, estimated_cost_micros=4_000)
            assert unavailable.value.status == 503 and "retry-after" in unavailable.value.headers

            # Settlements made meanwhile are queued, for the Redis reservation too.
            await limiter.settle(first, actual_tokens=0, actual_cost_micros=3_000)
            limiter.settle_nowait(healthy, actual_tokens=0, actual_cost_micros=500)
            await limiter.flush_settlements()
            assert limiter.pending_settlements == 2

            server.start()
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                reservation = await limiter.admit(ctx)
                if not reservation.local:
                    break
                assert asyncio.get_running_loop().time() < deadline, "limiter did not go back to Redis"
                await asyncio.sleep(0.1)
            assert limiter.redis_available and "ratelimit.redis.recovered" in events
            assert limiter.pending_settlements == 0
            check = redis.Redis.from_url(url)
            assert budget_state(check, "*:d:*") == (3_500, 0)  # spends replayed, reservation released
            check.close()

    try:
        run(main)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_budgets_fail_closed_when_configured(clock: ManualClock) -> None:
    ctx = make_ctx(limits={"rpm": 100, "daily_budget_micros": 1_000_000})
    unbudgeted = make_ctx(limits={"rpm": 100})

    async def main() -> None:
        dead = "unix:///nonexistent-dir/redis.sock"
        async with limiter_on(dead, clock, fallback=FallbackPolicy(budget_fraction=0.0)) as limiter:
            with pytest.raises(RateLimiterUnavailableError):
                await limiter.admit(ctx)  # no estimate, but under a budget: refused
            assert (await limiter.admit(unbudgeted)).local  # rate limits alone fall back locally

    run(main)
