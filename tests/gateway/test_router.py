"""The router: balancing, retries, fallbacks, circuit breaker, timeouts, streams and concurrency caps.

The upstreams are :class:`ScriptedProvider`, an in-memory stand-in for paid
model APIs that follows a per-deployment script of outcomes. Time is a manual
clock and backoff sleeps are recorded (they advance the clock instead of
waiting); only the timeout tests wait, for a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from core.errors import ConfigurationError
from gateway.errors import GatewayError
from gateway.providers.base import Deployment, ProviderResult, TokenUsage, UpstreamError
from gateway.router import (
    DeploymentsBusyError,
    ModelModeError,
    ModelNotFoundError,
    NoHealthyDeploymentError,
    Router,
)
from gateway.routing import CircuitBreakerPolicy, ModelGroup, RouterPolicy, RoutingConfig

T = TypeVar("T")

HANG = "hang"  # the call never answers (until a timeout cancels it)
HOLD = "hold"  # the call waits for ScriptedProvider.release


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ScriptedProvider:
    """Stand-in upstream: each deployment answers from its script (then succeeds by default)."""

    clock: ManualClock
    scripts: dict[str, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    latency: dict[str, float] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    closed_streams: list[str] = field(default_factory=list)
    release: asyncio.Event | None = None

    def script(self, name: str, *outcomes: Any) -> None:
        self.scripts[name].extend(outcomes)

    async def _outcome(self, deployment: Deployment) -> Any:
        self.calls.append(deployment.name)
        self.clock.advance(self.latency.get(deployment.name, 0.0))
        script = self.scripts[deployment.name]
        outcome = script.popleft() if script else None
        if outcome == HANG:
            await asyncio.sleep(3600)
        if outcome == HOLD:
            assert self.release is not None
            await self.release.wait()
            outcome = None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        await self._outcome(deployment)
        body = json.dumps({"deployment": deployment.name, "echo": payload.get("messages")}).encode()
        return ProviderResult(body=body, usage=TokenUsage(3, 5))

    async def embeddings(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        await self._outcome(deployment)
        return ProviderResult(body=b'{"data": []}', usage=TokenUsage(2, 0))

    def stream_chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> AsyncIterator[bytes]:
        return self._stream(deployment)

    async def _stream(self, deployment: Deployment) -> AsyncIterator[bytes]:
        try:
            frames = await self._outcome(deployment)
            for item in frames if frames is not None else [b"data: 1\n\n", b"data: 2\n\n"]:
                if item == HANG:
                    await asyncio.sleep(3600)
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed_streams.append(deployment.name)

    async def aclose(self) -> None:
        return None


def dep(name: str, alias: str, **fields: Any) -> Deployment:
    fields.setdefault("timeout_s", 5.0)
    return Deployment(
        name=name, alias=alias, provider="openai", model=f"model-{name}", api_base="http://127.0.0.1:9/v1", **fields
    )


def group(alias: str, *deployments: Deployment, **fields: Any) -> ModelGroup:
    return ModelGroup(alias=alias, deployments=deployments, **fields)


@dataclass
class Harness:
    router: Router
    provider: ScriptedProvider
    clock: ManualClock
    sleeps: list[float]
    events: list[tuple[str, dict[str, Any]]]

    def names(self, event: str) -> list[dict[str, Any]]:
        return [fields for name, fields in self.events if name == event]

    def state(self, deployment: str) -> dict[str, Any]:
        return next(row for row in self.router.health() if row["deployment"] == deployment)


def harness(*groups: ModelGroup, seed: int = 7, **policy: Any) -> Harness:
    policy.setdefault("retry_backoff_s", 0.25)
    config = RoutingConfig(router=RouterPolicy(**policy), models=groups)
    clock = ManualClock()
    provider = ScriptedProvider(clock)
    sleeps: list[float] = []
    events: list[tuple[str, dict[str, Any]]] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        clock.advance(delay)

    router = Router(
        config,
        {"openai": provider},
        clock=clock,
        sleep=sleep,
        rng=random.Random(seed),
        on_event=lambda name, fields: events.append((name, dict(fields))),
    )
    return Harness(router, provider, clock, sleeps, events)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (bounded: a stuck test fails, it does not hang)."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def chat_name(h: Harness, alias: str) -> str:
    deployment, result = await h.router.chat(alias, {"messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(result.body)["deployment"] == deployment.name
    return deployment.name


def err(status: int, *, retryable: bool | None = None, retry_after: float | None = None) -> UpstreamError:
    return UpstreamError(
        f"upstream said {status}",
        status=status,
        retryable=status in (408, 429, 500, 502, 503, 504) if retryable is None else retryable,
        retry_after=retry_after,
    )


# --------------------------------------------------------------------------- balancing


def test_weighted_balancing_follows_the_weights() -> None:
    h = harness(group("a", dep("w1", "a", weight=1), dep("w3", "a", weight=3), dep("w6", "a", weight=6)))

    async def main() -> Counter[str]:
        return Counter([await chat_name(h, "a") for _ in range(3_000)])

    counts = run(main())
    assert counts["w1"] / 3_000 == pytest.approx(0.1, abs=0.03)
    assert counts["w3"] / 3_000 == pytest.approx(0.3, abs=0.03)
    assert counts["w6"] / 3_000 == pytest.approx(0.6, abs=0.03)


def test_least_busy_picks_the_idle_deployment() -> None:
    h = harness(group("a", dep("b1", "a"), dep("b2", "a"), dep("b3", "a"), strategy="least-busy"))

    async def main() -> None:
        h.provider.release = asyncio.Event()
        for name in ("b1", "b2", "b3"):
            h.provider.script(name, HOLD, HOLD)
        first = asyncio.create_task(chat_name(h, "a"))
        second = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: len(h.provider.calls) == 2)
        busy = set(h.provider.calls)
        assert len(busy) == 2  # the second call avoided the first one's deployment
        (idle,) = {"b1", "b2", "b3"} - busy
        third = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: len(h.provider.calls) == 3)
        assert h.provider.calls[2] == idle
        assert [h.state(n)["in_flight"] for n in ("b1", "b2", "b3")] == [1, 1, 1]
        h.provider.release.set()
        await asyncio.gather(first, second, third)
        assert [h.state(n)["in_flight"] for n in ("b1", "b2", "b3")] == [0, 0, 0]

    run(main())


def test_latency_strategy_prefers_the_fast_deployment() -> None:
    h = harness(
        group("a", dep("slow", "a"), dep("fast", "a"), strategy="latency"),
        latency_exploration=0.0,
    )
    h.provider.latency.update(slow=2.0, fast=0.05)

    async def main() -> list[str]:
        return [await chat_name(h, "a") for _ in range(20)]

    picks = run(main())
    assert set(picks[:2]) == {"slow", "fast"}  # each measured once first
    assert picks[2:] == ["fast"] * 18
    assert h.state("fast")["ewma_latency_s"] == pytest.approx(0.05)
    assert h.state("slow")["ewma_latency_s"] == pytest.approx(2.0)


def test_latency_exploration_measures_a_recovered_deployment_again() -> None:
    h = harness(group("a", dep("x", "a"), dep("y", "a"), strategy="latency"), latency_exploration=0.2)
    h.provider.latency.update(x=3.0, y=0.5)

    async def main() -> list[str]:
        before = [await chat_name(h, "a") for _ in range(50)]
        h.provider.latency["x"] = 0.01  # x has recovered
        return before + [await chat_name(h, "a") for _ in range(200)]

    picks = run(main())
    assert picks[2:50].count("y") > picks[2:50].count("x") > 0  # mostly the fast one, some exploration
    assert picks[-50:].count("x") > 40  # x was measured again and now wins
    assert h.state("x")["ewma_latency_s"] < h.state("y")["ewma_latency_s"]


def test_a_recovered_deployment_starts_from_a_fresh_latency_sample() -> None:
    h = harness(
        group("a", dep("x", "a"), dep("y", "a"), strategy="latency", fallbacks=("b",)),
        group("b", dep("b1", "b")),
        latency_exploration=0.0,
        num_retries=0,
        circuit_breaker=CircuitBreakerPolicy(failure_threshold=1, cooldown_s=10),
    )
    h.provider.latency.update(x=5.0, y=1.0)

    async def main() -> None:
        assert {await chat_name(h, "a"), await chat_name(h, "a")} == {"x", "y"}
        h.provider.script("y", err(503))
        assert await chat_name(h, "a") == "x"  # y failed (circuit opens), x answered
        assert h.state("y")["circuit"] == "open"
        h.clock.advance(10)
        h.provider.latency["y"] = 0.2
        assert await chat_name(h, "a") == "y"  # the half-open trial
        # The sample taken after the outage replaces the old average instead of blending into it.
        assert h.state("y")["ewma_latency_s"] == pytest.approx(0.2)

    run(main())


# --------------------------------------------------------------------------- retries


def test_retryable_errors_are_retried_with_backoff_honouring_retry_after() -> None:
    h = harness(group("a", dep("only", "a")), num_retries=3, retry_backoff_s=0.25, max_backoff_s=4)
    h.provider.script("only", err(429, retry_after=1.5), err(500), err(503, retry_after=60))

    async def main() -> str:
        return await chat_name(h, "a")

    assert run(main()) == "only"
    assert h.provider.calls == ["only"] * 4
    first, second, third = h.sleeps
    assert first == pytest.approx(1.5)  # Retry-After beats the 0.25 s backoff
    assert 0.25 <= second <= 0.5  # 0.25 * 2, half of it jittered
    assert third == pytest.approx(4.0)  # Retry-After 60 capped at max_backoff_s
    assert [e["status"] for e in h.names("router.attempt.failed")] == [429, 500, 503]
    assert [e["reason"] for e in h.names("router.attempt.failed")] == ["429", "5xx", "5xx"]
    assert [e["attempt"] for e in h.names("router.retry")] == [2, 3, 4]
    assert h.state("only")["consecutive_failures"] == 0  # the success reset it


def test_a_timeout_is_a_retryable_504() -> None:
    h = harness(group("a", dep("slowpoke", "a", timeout_s=0.05)), num_retries=1)
    h.provider.script("slowpoke", HANG)

    assert run(chat_name(h, "a")) == "slowpoke"
    assert h.provider.calls == ["slowpoke", "slowpoke"]
    (failed,) = h.names("router.attempt.failed")
    assert failed["status"] == 504 and failed["reason"] == "timeout" and failed["retryable"] is True


def test_timeouts_on_every_try_surface_as_504_upstream_error() -> None:
    h = harness(group("a", dep("slowpoke", "a", timeout_s=0.02)), num_retries=1)
    h.provider.script("slowpoke", HANG, HANG)

    with pytest.raises(UpstreamError) as info:
        run(chat_name(h, "a"))
    assert info.value.status == 504 and info.value.deployment == "slowpoke"
    assert h.state("slowpoke")["in_flight"] == 0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_non_retryable_errors_return_at_once_without_retry_or_fallback(status: int) -> None:
    h = harness(
        group("a", dep("a1", "a"), dep("a2", "a"), fallbacks=("b",)),
        group("b", dep("b1", "b")),
    )
    h.provider.script("a1", err(status))
    h.provider.script("a2", err(status))

    with pytest.raises(UpstreamError) as info:
        run(chat_name(h, "a"))
    assert info.value.status == status and info.value.retryable is False
    assert info.value.deployment in {"a1", "a2"}
    assert h.provider.calls == [info.value.deployment]
    assert h.sleeps == [] and h.names("router.fallback.tried") == []
    assert h.state(info.value.deployment)["consecutive_failures"] == 0


def test_other_deployments_are_tried_before_retrying_then_fallbacks_in_order() -> None:
    h = harness(
        group("a", dep("a1", "a"), dep("a2", "a"), fallbacks=("b", "c")),
        group("b", dep("b1", "b")),
        group("c", dep("c1", "c")),
        num_retries=1,
    )
    for name in ("a1", "a2", "b1"):
        h.provider.script(name, err(503), err(502))

    assert run(chat_name(h, "a")) == "c1"
    calls = h.provider.calls
    assert set(calls[:2]) == {"a1", "a2"}  # a failure moves to the other deployment first, without waiting
    assert set(calls[2:4]) == {"a1", "a2"}  # then each is retried once, after a backoff
    assert calls[4:] == ["b1", "b1", "c1"]
    assert len(h.sleeps) == 3  # a1, a2 and b1 retries; moving to another deployment or alias never waits
    assert [(e["fallback"], e["previous"]) for e in h.names("router.fallback.tried")] == [("b", "a"), ("c", "b")]
    assert h.names("router.fallback.used") == [{"alias": "a", "fallback": "c", "deployment": "c1"}]


def test_fallbacks_of_fallbacks_come_after_the_alias_own_list() -> None:
    h = harness(
        group("a", dep("a1", "a"), fallbacks=("b", "c")),
        group("b", dep("b1", "b"), fallbacks=("d",)),
        group("c", dep("c1", "c")),
        group("d", dep("d1", "d")),
        num_retries=0,
    )
    for name in ("a1", "b1", "c1"):
        h.provider.script(name, err(500))

    assert run(chat_name(h, "a")) == "d1"
    assert h.provider.calls == ["a1", "b1", "c1", "d1"]


def test_total_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    h = harness(
        group("a", dep("a1", "a"), fallbacks=("b",)),
        group("b", dep("b1", "b")),
        num_retries=5,
        max_attempts=4,
    )
    h.provider.script("a1", *[err(500)] * 10)

    with pytest.raises(UpstreamError) as info:
        run(chat_name(h, "a"))
    assert h.provider.calls == ["a1"] * 4
    assert info.value.status == 500 and info.value.deployment == "a1"
    assert h.names("router.fallback.tried") == []  # the budget was spent before the fallback


def test_when_everything_fails_the_last_upstream_error_is_raised() -> None:
    h = harness(group("a", dep("a1", "a"), fallbacks=("b",)), group("b", dep("b1", "b")), num_retries=0)
    h.provider.script("a1", err(500))
    h.provider.script("b1", err(429, retry_after=3))

    with pytest.raises(UpstreamError) as info:
        run(chat_name(h, "a"))
    assert (info.value.status, info.value.deployment, info.value.retry_after) == (429, "b1", 3)


# --------------------------------------------------------------------------- circuit breaker


def breaker_harness() -> Harness:
    return harness(
        group("a", dep("flaky", "a"), fallbacks=("backup",)),
        group("backup", dep("spare", "backup")),
        num_retries=0,
        circuit_breaker=CircuitBreakerPolicy(failure_threshold=3, cooldown_s=30),
    )


def test_circuit_opens_is_skipped_half_opens_and_closes_on_success() -> None:
    h = breaker_harness()
    h.provider.script("flaky", err(500), err(502), err(504))

    async def main() -> None:
        assert [await chat_name(h, "a") for _ in range(3)] == ["spare"] * 3
        assert h.state("flaky")["circuit"] == "open"
        assert h.state("flaky")["consecutive_failures"] == 3
        assert h.state("flaky")["half_open_in_s"] == pytest.approx(30)
        (opened,) = h.names("router.circuit.opened")
        assert opened["deployment"] == "flaky" and opened["state"] == "open"

        # Open: skipped without a call.
        assert await chat_name(h, "a") == "spare"
        h.clock.advance(29.9)
        assert await chat_name(h, "a") == "spare"
        assert h.provider.calls.count("flaky") == 3

        # After the cooldown: one trial, which succeeds and closes the circuit.
        h.clock.advance(0.2)
        assert h.state("flaky")["circuit"] == "half-open"
        assert await chat_name(h, "a") == "flaky"
        assert h.state("flaky")["circuit"] == "closed"
        assert h.state("flaky")["consecutive_failures"] == 0
        assert [e["deployment"] for e in h.names("router.circuit.half_open")] == ["flaky"]
        assert [e["deployment"] for e in h.names("router.circuit.closed")] == ["flaky"]

    run(main())


def test_a_failed_half_open_trial_reopens_for_another_cooldown() -> None:
    h = breaker_harness()
    h.provider.script("flaky", err(500), err(500), err(500), err(503))

    async def main() -> None:
        for _ in range(3):
            await chat_name(h, "a")
        h.clock.advance(30)
        assert await chat_name(h, "a") == "spare"  # the trial went to flaky, failed, the fallback answered
        assert h.provider.calls.count("flaky") == 4
        assert h.state("flaky")["circuit"] == "open"
        assert len(h.names("router.circuit.opened")) == 2
        h.clock.advance(29)
        assert await chat_name(h, "a") == "spare"
        assert h.provider.calls.count("flaky") == 4
        h.clock.advance(1)
        assert await chat_name(h, "a") == "flaky"

    run(main())


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    h = breaker_harness()
    h.provider.script("flaky", err(500), err(500), err(500), HOLD)

    async def main() -> None:
        h.provider.release = asyncio.Event()
        for _ in range(3):
            await chat_name(h, "a")
        h.clock.advance(30)
        trial = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: h.provider.calls.count("flaky") == 4)
        assert await chat_name(h, "a") == "spare"  # not a second trial
        h.provider.release.set()
        assert await trial == "flaky"
        assert h.state("flaky")["circuit"] == "closed"

    run(main())


def test_non_retryable_errors_do_not_open_the_circuit() -> None:
    h = breaker_harness()
    h.provider.script("flaky", *[err(400)] * 5)

    async def main() -> None:
        for _ in range(5):
            with pytest.raises(UpstreamError):
                await chat_name(h, "a")

    run(main())
    assert h.state("flaky")["circuit"] == "closed"
    assert h.provider.calls == ["flaky"] * 5


def test_all_circuits_open_fails_fast_with_503_and_no_provider_call() -> None:
    h = harness(
        group("a", dep("a1", "a"), dep("a2", "a"), fallbacks=("b",)),
        group("b", dep("b1", "b")),
        num_retries=0,
        circuit_breaker=CircuitBreakerPolicy(failure_threshold=1, cooldown_s=10),
    )
    for name in ("a1", "a2", "b1"):
        h.provider.script(name, err(503))

    async def main() -> None:
        with pytest.raises(UpstreamError):
            await chat_name(h, "a")
        assert {r["deployment"]: r["circuit"] for r in h.router.health()} == {"a1": "open", "a2": "open", "b1": "open"}
        calls, sleeps = len(h.provider.calls), len(h.sleeps)
        h.clock.advance(3)
        with pytest.raises(NoHealthyDeploymentError) as info:
            await chat_name(h, "a")
        assert len(h.provider.calls) == calls and len(h.sleeps) == sleeps
        error = info.value
        assert isinstance(error, GatewayError) and error.status == 503
        assert error.headers == {"retry-after": "7"}
        body = error.to_openai()
        assert body["error"]["code"] == "no_healthy_deployment" and body["error"]["type"] == "api_error"
        assert "`a`" in (body["error"]["message"] or "")

    run(main())


# --------------------------------------------------------------------------- streams


async def collect(frames: AsyncIterator[bytes]) -> list[bytes]:
    return [frame async for frame in frames]


def test_stream_failure_before_the_first_frame_falls_back() -> None:
    h = harness(group("a", dep("a1", "a"), fallbacks=("b",)), group("b", dep("b1", "b")), num_retries=0)
    h.provider.script("a1", [err(502), b"data: never\n\n"])
    h.provider.script("b1", [b"data: b-1\n\n", b"data: b-2\n\n"])

    async def main() -> None:
        deployment, frames = await h.router.stream_chat("a", {"stream": True})
        assert deployment.name == "b1"
        assert h.state("b1")["in_flight"] == 1
        assert await collect(frames) == [b"data: b-1\n\n", b"data: b-2\n\n"]
        assert h.state("b1")["in_flight"] == 0 and h.state("a1")["in_flight"] == 0
        assert h.provider.closed_streams == ["a1", "b1"]

    run(main())
    assert h.names("router.fallback.used") == [{"alias": "a", "fallback": "b", "deployment": "b1"}]


def test_stream_timeout_before_the_first_frame_is_retried() -> None:
    h = harness(group("a", dep("a1", "a", timeout_s=0.05)), num_retries=1)
    h.provider.script("a1", [HANG])

    async def main() -> list[bytes]:
        _, frames = await h.router.stream_chat("a", {})
        return await collect(frames)

    assert run(main()) == [b"data: 1\n\n", b"data: 2\n\n"]
    assert h.provider.calls == ["a1", "a1"]
    assert h.names("router.attempt.failed")[0]["status"] == 504


@pytest.mark.parametrize(
    ("failure", "status"),
    [(err(500), 500), (RuntimeError("socket went away"), 502), (HANG, 504)],
)
def test_stream_failure_after_the_first_frame_propagates(failure: Any, status: int) -> None:
    h = harness(group("a", dep("a1", "a", timeout_s=0.05), fallbacks=("b",)), group("b", dep("b1", "b")))
    h.provider.script("a1", [b"data: a-1\n\n", failure])

    async def main() -> None:
        deployment, frames = await h.router.stream_chat("a", {})
        assert deployment.name == "a1"
        assert await anext(frames) == b"data: a-1\n\n"
        with pytest.raises(UpstreamError) as info:
            await anext(frames)
        assert info.value.status == status and info.value.deployment == "a1"
        assert h.provider.calls == ["a1"]  # no retry and no fallback once frames flowed
        assert h.state("a1")["in_flight"] == 0
        assert h.state("a1")["consecutive_failures"] == 1
        assert "a1" in h.provider.closed_streams
        with pytest.raises(StopAsyncIteration):
            await anext(frames)

    run(main())


def test_stream_closed_early_releases_in_flight_and_closes_upstream() -> None:
    h = harness(group("a", dep("a1", "a", max_concurrency=1)))
    h.provider.script("a1", [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"])

    async def main() -> None:
        _, frames = await h.router.stream_chat("a", {})
        assert await anext(frames) == b"data: 1\n\n"
        assert h.state("a1")["in_flight"] == 1
        await frames.aclose()
        assert h.state("a1")["in_flight"] == 0
        assert h.provider.closed_streams == ["a1"]
        await frames.aclose()  # idempotent
        assert h.state("a1")["in_flight"] == 0
        # Closed before reading anything (the client went away at once).
        _, unread = await h.router.stream_chat("a", {})
        await unread.aclose()
        assert h.state("a1")["in_flight"] == 0
        # Dropped without being read or closed: the slot still comes back.
        _, dropped = await h.router.stream_chat("a", {})
        assert h.state("a1")["in_flight"] == 1
        del dropped
        gc.collect()
        assert h.state("a1")["in_flight"] == 0
        # The cap of 1 never leaked: another stream is served.
        _, again = await h.router.stream_chat("a", {})
        assert await collect(again) == [b"data: 1\n\n", b"data: 2\n\n"]
        assert h.state("a1")["consecutive_failures"] == 0

    run(main())


def test_an_empty_stream_is_a_success() -> None:
    h = harness(group("a", dep("a1", "a")))
    h.provider.script("a1", [])

    async def main() -> None:
        _, frames = await h.router.stream_chat("a", {})
        assert await collect(frames) == []
        assert h.state("a1")["in_flight"] == 0

    run(main())


# --------------------------------------------------------------------------- concurrency caps


def test_max_concurrency_skips_a_full_deployment_then_answers_busy() -> None:
    h = harness(group("a", dep("small", "a", max_concurrency=1, weight=100), dep("other", "a", max_concurrency=1)))

    async def main() -> None:
        h.provider.release = asyncio.Event()
        h.provider.script("small", HOLD)
        h.provider.script("other", HOLD)
        first = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: len(h.provider.calls) == 1)
        second = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: len(h.provider.calls) == 2)
        assert set(h.provider.calls) == {"small", "other"}  # the full one was skipped
        with pytest.raises(DeploymentsBusyError) as info:
            await chat_name(h, "a")
        assert len(h.provider.calls) == 2
        assert info.value.status == 429 and info.value.headers == {"retry-after": "1"}
        assert info.value.to_openai()["error"]["code"] == "deployments_busy"
        h.provider.release.set()
        await asyncio.gather(first, second)
        assert await chat_name(h, "a") in {"small", "other"}

    run(main())


def test_a_busy_alias_falls_back() -> None:
    h = harness(group("a", dep("a1", "a", max_concurrency=1), fallbacks=("b",)), group("b", dep("b1", "b")))

    async def main() -> None:
        h.provider.release = asyncio.Event()
        h.provider.script("a1", HOLD)
        held = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: h.provider.calls == ["a1"])
        assert await chat_name(h, "a") == "b1"
        h.provider.release.set()
        assert await held == "a1"

    run(main())


def test_a_cancelled_call_releases_its_slot() -> None:
    h = harness(group("a", dep("a1", "a", max_concurrency=1)))

    async def main() -> None:
        h.provider.script("a1", HANG)
        task = asyncio.create_task(chat_name(h, "a"))
        await until(lambda: h.provider.calls == ["a1"])
        assert h.state("a1")["in_flight"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert h.state("a1")["in_flight"] == 0
        assert h.state("a1")["consecutive_failures"] == 0
        assert await chat_name(h, "a") == "a1"

    run(main())


# --------------------------------------------------------------------------- aliases and errors


def test_aliases_groups_and_embeddings() -> None:
    h = harness(
        group("chatty", dep("c1", "chatty")),
        group("vec", dep("e1", "vec", mode="embedding"), mode="embedding"),
    )
    assert h.router.aliases() == ["chatty", "vec"]
    assert h.router.aliases("embedding") == ["vec"]
    assert h.router.group("vec").mode == "embedding"

    deployment, result = run(h.router.embeddings("vec", {"input": ["x"]}))
    assert deployment.name == "e1" and result.usage == TokenUsage(2, 0)

    with pytest.raises(ModelNotFoundError) as info:
        h.router.group("gpt-5")
    assert info.value.status == 404
    assert info.value.to_openai() == {
        "error": {
            "message": "The model `gpt-5` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "code": "model_not_found",
            "param": "model",
        }
    }
    with pytest.raises(ModelNotFoundError):
        run(h.router.chat("gpt-5", {}))
    with pytest.raises(ModelModeError) as mode_info:
        run(h.router.chat("vec", {}))
    assert mode_info.value.status == 400
    with pytest.raises(ModelModeError):
        run(h.router.embeddings("chatty", {}))
    assert h.provider.calls == ["e1"]


def test_every_provider_kind_in_the_config_needs_a_provider() -> None:
    config = RoutingConfig(
        models=(
            group("a", Deployment(name="az", alias="a", provider="azure", model="m", api_base="x", api_version="v")),
        )
    )
    with pytest.raises(ConfigurationError, match=r"azure \(deployment az\)"):
        Router(config, {"openai": ScriptedProvider(ManualClock())})


def test_a_failing_event_hook_does_not_break_calls() -> None:
    config = RoutingConfig(router=RouterPolicy(num_retries=1), models=(group("a", dep("a1", "a")),))
    clock = ManualClock()
    provider = ScriptedProvider(clock)
    provider.script("a1", err(500))

    def hook(name: str, fields: Mapping[str, Any]) -> None:
        raise RuntimeError("metrics down")

    async def no_wait(delay: float) -> None:
        return None

    router = Router(config, {"openai": provider}, clock=clock, sleep=no_wait, on_event=hook)
    deployment, _ = run(router.chat("a", {}))
    assert deployment.name == "a1"
