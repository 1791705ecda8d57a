"""Route one request to a deployment: balancing, retries, fallbacks, circuit breaker, timeouts.

A call names a model alias. The :class:`Router` tries the alias's
deployments, then its ``fallbacks`` (breadth first: the alias's own list in
order, then their fallbacks), until one answers or the attempt budget
(``router.max_attempts``) is spent.

Picking a deployment
    Only deployments whose circuit lets calls through and that are below
    their ``max_concurrency`` are candidates; deployments not yet tried in
    this call are preferred, so a failure moves to another deployment at once
    and only then retries with backoff. Among candidates the alias's strategy
    chooses: ``weighted`` (random by weight), ``least-busy`` (fewest in
    flight; ties random by weight) or ``latency`` (lowest moving average
    latency; a deployment never measured goes first, and a share
    ``router.latency_exploration`` of picks is random so a slow or recovered
    deployment gets measured again). Latency is the whole call, or the time
    to the first frame for streams. A retry keeps its in-flight slot while it
    waits out its backoff.

Retries
    Only :class:`~gateway.providers.base.UpstreamError` with ``retryable``
    (timeouts, 408/409/429/5xx, connection errors) is retried, each
    deployment at most ``1 + router.num_retries`` times per call, with
    exponential backoff and jitter (``retry_backoff_s * 2**(n-1)``, halved
    plus a random half, at most ``max_backoff_s``) and never sooner than the
    upstream's ``Retry-After`` (also capped at ``max_backoff_s``). A
    non-retryable error (400, 401, 403, 404, 422) is returned at once, with no
    retry and no fallback: another upstream would refuse the same request.
    Anything else a provider raises is a bug and propagates unchanged (its
    slot is released; the circuit is not charged).

Circuit breaker (per deployment)
    ``closed`` → ``open`` after ``failure_threshold`` consecutive retryable
    failures; an open deployment is skipped. After ``cooldown_s`` it is
    ``half-open``: one trial call goes through; success closes it, a
    retryable failure opens it again for another cooldown. A non-retryable
    answer proves the upstream is reachable and counts as a success here.
    When every deployment of the alias and its fallbacks is open the call
    fails at once with :class:`NoHealthyDeploymentError` (503, ``Retry-After``
    the time to the first half-open) without calling any provider; when they
    are busy (at their cap, or half-open with a trial in flight) with
    :class:`DeploymentsBusyError` (429, retryable by clients).

Timeouts and streams
    ``deployment.timeout_s`` bounds a whole non-streamed call (a 504
    retryable :class:`UpstreamError`). For streams it bounds the wait for the
    first frame and then each gap between frames. The router pulls the first
    frame before it returns, so retries and fallbacks happen only until then;
    afterwards the returned :class:`RoutedStream` re-raises failures as
    :class:`UpstreamError` and, however the stream ends (exhausted, failed,
    ``aclose()``-d early or dropped), releases its in-flight slot exactly once.

Events
    ``on_event(name, fields)`` is called (and the same event logged, never with
    secrets) with these fields:

    ==========================  ==================================================================
    event                       fields
    ==========================  ==================================================================
    router.attempt.succeeded    alias, deployment, duration_s (to the first frame for streams)
    router.attempt.failed       alias, deployment, provider, status, reason (``timeout``, ``429``,
                                ``5xx``, ``4xx``, ``other``), retryable, attempt, duration_s, error
    router.retry                alias, deployment, attempt (number of the coming try), delay_s
    router.fallback.tried       alias (asked for), fallback, previous, status (of the last failure)
    router.fallback.used        alias (asked for), fallback, deployment
    router.circuit.opened       alias, deployment, state, consecutive_failures, cooldown_s
    router.circuit.half_open    alias, deployment, state
    router.circuit.closed       alias, deployment, state
    ==========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from core.errors import ConfigurationError
from gateway.errors import (
    DeploymentsBusyError,
    ModelModeError,
    ModelNotFoundError,
    NoHealthyDeploymentError,
)
from gateway.providers.base import Deployment, Mode, Provider, ProviderResult, UpstreamError
from gateway.routing import ModelGroup, RoutingConfig

logger = logging.getLogger(__name__)

EventHook = Callable[[str, Mapping[str, Any]], None]
CircuitState = Literal["closed", "open", "half-open"]
T = TypeVar("T")

# Weight of the newest sample in the latency moving average.
_EWMA_ALPHA = 0.3


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class _State:
    """Mutable bookkeeping of one deployment (one event loop: no locks needed)."""

    deployment: Deployment
    in_flight: int = 0
    ewma_s: float | None = None
    consecutive_failures: int = 0
    opened_at: float | None = None  # None while the circuit is closed
    trial: bool = False  # a half-open trial call is in flight
    stale_latency: bool = False  # the next sample replaces the average (after an outage)

    @property
    def name(self) -> str:
        return self.deployment.name

    def at_cap(self) -> bool:
        cap = self.deployment.max_concurrency
        return cap is not None and self.in_flight >= cap


class _Lease:
    """One attempt's hold on a deployment: its in-flight slot and, maybe, the half-open trial."""

    __slots__ = ("_released", "router", "started_at", "state", "trial")

    def __init__(self, router: Router, state: _State, *, trial: bool) -> None:
        self.router = router
        self.state = state
        self.trial = trial
        self.started_at = router._clock()
        self._released = False

    @property
    def deployment(self) -> Deployment:
        return self.state.deployment

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the slot back (idempotent); an unfinished trial lets another one start."""
        if self._released:
            return
        self._released = True
        self.state.in_flight -= 1
        if self.trial:
            self.trial = False
            self.state.trial = False


# --------------------------------------------------------------------------- streams


class RoutedStream:
    """The frames of a routed stream; an ``AsyncIterator[bytes]`` that cleans up after itself.

    Iterate it to the end or call :meth:`aclose`; either way (and also if it
    is dropped unfinished) the deployment's in-flight slot is released once.
    Failures after the first frame are raised as :class:`UpstreamError` with
    ``deployment`` set and count against the deployment's circuit.
    """

    def __init__(self, lease: _Lease, first: bytes | None, upstream: AsyncIterator[bytes]) -> None:
        self._lease = lease
        self._first = first
        self._upstream = upstream
        self._done = first is None

    @property
    def deployment(self) -> Deployment:
        """The deployment serving this stream."""
        return self._lease.deployment

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._done:
            self._lease.release()
            raise StopAsyncIteration
        deployment = self._lease.deployment
        try:
            async with asyncio.timeout(deployment.timeout_s):
                return await anext(self._upstream)
        except StopAsyncIteration:
            self._done = True
            self._lease.release()
            raise
        except UpstreamError as exc:
            await self._fail(exc)
            raise
        except TimeoutError as exc:
            error = UpstreamError(
                f"deployment {deployment.name}: no data for {deployment.timeout_s:g}s", status=504, retryable=True
            )
            await self._fail(error)
            raise error from exc
        except Exception as exc:
            error = UpstreamError(f"deployment {deployment.name}: stream failed: {type(exc).__name__}", status=502)
            await self._fail(error)
            raise error from exc
        except BaseException:  # cancelled: neither a success nor a failure of the upstream
            self._done = True
            self._lease.release()
            await _aclose_quietly(self._upstream)
            raise

    async def aclose(self) -> None:
        """Stop early: release the slot and close the upstream stream."""
        self._first = None
        self._done = True
        self._lease.release()
        await _aclose_quietly(self._upstream)

    async def _fail(self, error: UpstreamError) -> None:
        self._done = True
        self._lease.router._record_failure(self._lease, error, alias=self._lease.deployment.alias, attempt=None)
        self._lease.release()
        await _aclose_quietly(self._upstream)

    def __del__(self) -> None:
        # Safety net for a consumer that neither finished nor closed the stream:
        # the counters must not leak (the upstream generator is finalised by the loop).
        lease = getattr(self, "_lease", None)
        if lease is not None and not lease.released:
            lease.release()


def _reason(status: int) -> str:
    """A small, fixed vocabulary for metrics labels."""
    if status == 504:
        return "timeout"
    if status == 429:
        return "429"
    if 500 <= status < 600:
        return "5xx"
    if 400 <= status < 500:
        return "4xx"
    return "other"


async def _aclose_quietly(iterator: AsyncIterator[bytes]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # closing a broken upstream must not hide the real outcome
        logger.debug("router.stream.close_failed", exc_info=True)


# --------------------------------------------------------------------------- router


class Router:
    """Send calls for a model alias to its deployments and fallbacks.

    Args:
        config: The validated routing configuration.
        providers: Provider instance per provider kind (``openai``, ``azure``,
            ``litellm``, ``offline``, ``local-embed``); every kind the config
            uses must be present.
        clock: Monotonic seconds (circuit cooldowns, latency); tests move it.
        sleep: Awaited for retry backoffs; tests record the delays.
        rng: Randomness for balancing and jitter (seed it in tests).
        on_event: Metrics hook called with an event name and its fields.

    Raises:
        ConfigurationError: A deployment's provider kind has no provider.
    """

    def __init__(
        self,
        config: RoutingConfig,
        providers: Mapping[str, Provider],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_event: EventHook | None = None,
    ) -> None:
        missing = sorted(
            {f"{d.provider} (deployment {d.name})" for d in config.deployments() if d.provider not in providers}
        )
        if missing:
            raise ConfigurationError(f"routing: no provider configured for {', '.join(missing)}")
        self._config = config
        self._policy = config.router
        self._providers = dict(providers)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - load balancing and jitter, not security
        self._on_event = on_event
        self._groups = {group.alias: group for group in config.models}
        self._states = {d.name: _State(d) for d in config.deployments()}
        self._chains = {alias: self._fallback_chain(alias) for alias in self._groups}

    @property
    def config(self) -> RoutingConfig:
        """The configuration this router serves."""
        return self._config

    def aliases(self, mode: Mode | None = None) -> list[str]:
        """Configured aliases in configuration order, optionally only those of ``mode``."""
        return self._config.aliases(mode)

    def group(self, alias: str) -> ModelGroup:
        """The group of ``alias``.

        Raises:
            ModelNotFoundError: No such alias (404 ``model_not_found``).
        """
        group = self._groups.get(alias)
        if group is None:
            raise ModelNotFoundError(alias)
        return group

    async def chat(self, alias: str, payload: Mapping[str, Any]) -> tuple[Deployment, ProviderResult]:
        """One chat completion through the alias's deployments and fallbacks.

        Returns:
            The deployment that answered and its result.

        Raises:
            ModelNotFoundError: Unknown alias.
            ModelModeError: The alias is not a chat model.
            UpstreamError: The last failure (``deployment`` set) when every try failed,
                or the first non-retryable one.
            NoHealthyDeploymentError: Every circuit is open; nothing was called.
            DeploymentsBusyError: Every usable deployment is at its cap; nothing was called.
        """

        async def attempt(lease: _Lease) -> ProviderResult:
            deployment = lease.deployment
            async with asyncio.timeout(deployment.timeout_s):
                return await self._providers[deployment.provider].chat(deployment, payload)

        lease, result = await self._route(alias, "chat", attempt, hand_off=False)
        return lease.deployment, result

    async def embeddings(self, alias: str, payload: Mapping[str, Any]) -> tuple[Deployment, ProviderResult]:
        """One embeddings call through the alias's deployments and fallbacks (errors as :meth:`chat`)."""

        async def attempt(lease: _Lease) -> ProviderResult:
            deployment = lease.deployment
            async with asyncio.timeout(deployment.timeout_s):
                return await self._providers[deployment.provider].embeddings(deployment, payload)

        lease, result = await self._route(alias, "embedding", attempt, hand_off=False)
        return lease.deployment, result

    async def stream_chat(self, alias: str, payload: Mapping[str, Any]) -> tuple[Deployment, RoutedStream]:
        """A streamed chat completion; retries and fallbacks happen until the first frame.

        Returns:
            The deployment and a :class:`RoutedStream` of SSE frames (the first
            one already received). Consume it to the end or ``aclose()`` it.

        Raises:
            Same as :meth:`chat`, for failures before the first frame.
        """

        async def attempt(lease: _Lease) -> RoutedStream:
            deployment = lease.deployment
            upstream = self._providers[deployment.provider].stream_chat(deployment, payload)
            first: bytes | None
            try:
                async with asyncio.timeout(deployment.timeout_s):
                    first = await anext(upstream)
            except StopAsyncIteration:
                first = None
            except BaseException:
                await _aclose_quietly(upstream)
                raise
            return RoutedStream(lease, first, upstream)

        lease, stream = await self._route(alias, "chat", attempt, hand_off=True)
        return lease.deployment, stream

    def health(self) -> list[dict[str, Any]]:
        """Per deployment: alias, circuit state, in flight, latency average, consecutive failures."""
        now = self._clock()
        cooldown = self._policy.circuit_breaker.cooldown_s
        rows = []
        for state in self._states.values():
            d = state.deployment
            circuit = self._circuit(state, now)
            reopens_in = None
            if circuit == "open" and state.opened_at is not None:
                reopens_in = round(max(0.0, state.opened_at + cooldown - now), 3)
            rows.append(
                {
                    "alias": d.alias,
                    "deployment": d.name,
                    "provider": d.provider,
                    "model": d.model,
                    "circuit": circuit,
                    "half_open_in_s": reopens_in,
                    "in_flight": state.in_flight,
                    "max_concurrency": d.max_concurrency,
                    "ewma_latency_s": state.ewma_s,
                    "consecutive_failures": state.consecutive_failures,
                }
            )
        return rows

    # ----------------------------------------------------------------- core loop

    async def _route(
        self, alias: str, mode: Mode, attempt: Callable[[_Lease], Awaitable[T]], *, hand_off: bool
    ) -> tuple[_Lease, T]:
        group = self.group(alias)
        if group.mode != mode:
            raise ModelModeError(f"The model `{alias}` serves {group.mode} requests, not {mode}.", param="model")
        policy = self._policy
        attempts = 0
        last_error: UpstreamError | None = None
        busy = False
        chain = self._chains[alias]
        for position, name in enumerate(chain):
            if attempts >= policy.max_attempts:
                break
            group = self._groups[name]
            if position > 0:
                self._emit(
                    "router.fallback.tried",
                    logging.INFO,
                    alias=alias,
                    fallback=name,
                    previous=chain[position - 1],
                    status=last_error.status if last_error else None,
                )
            tries: dict[str, int] = {}
            errors: dict[str, UpstreamError] = {}
            while attempts < policy.max_attempts:
                now = self._clock()
                states = [self._states[d.name] for d in group.deployments]
                eligible = [s for s in states if tries.get(s.name, 0) <= policy.num_retries]
                candidates = [s for s in eligible if self._available(s, now)]
                if not candidates:
                    busy = busy or any(self._circuit(s, now) != "open" for s in eligible)
                    break
                fresh = [s for s in candidates if s.name not in tries]
                state = self._pick(group, fresh or candidates)
                lease = self._acquire(state, now)
                try:
                    previous = tries.get(state.name, 0)
                    if previous:
                        delay = self._backoff(previous, errors[state.name].retry_after)
                        self._emit(
                            "router.retry",
                            logging.INFO,
                            alias=name,
                            deployment=state.name,
                            attempt=previous + 1,
                            delay_s=round(delay, 3),
                        )
                        await self._sleep(delay)
                    tries[state.name] = previous + 1
                    attempts += 1
                    lease.started_at = self._clock()
                    try:
                        result = await attempt(lease)
                    except TimeoutError as exc:
                        d = state.deployment
                        raise UpstreamError(
                            f"deployment {d.name}: timed out after {d.timeout_s:g}s", status=504, retryable=True
                        ) from exc
                except UpstreamError as exc:
                    self._record_failure(lease, exc, alias=name, attempt=attempts)
                    lease.release()
                    if not exc.retryable:
                        raise
                    last_error = errors[state.name] = exc
                    continue
                except BaseException:
                    lease.release()
                    raise
                self._record_success(lease, alias=name)
                if not hand_off:
                    lease.release()
                if position > 0:
                    self._emit("router.fallback.used", logging.INFO, alias=alias, fallback=name, deployment=state.name)
                return lease, result
        if last_error is not None:
            raise last_error
        if busy:
            raise DeploymentsBusyError(
                f"Every deployment of `{alias}` and its fallbacks is at capacity; retry shortly.",
                headers={"retry-after": "1"},
            )
        raise self._all_open_error(alias, chain)

    # ----------------------------------------------------------------- picking

    def _pick(self, group: ModelGroup, candidates: list[_State]) -> _State:
        if len(candidates) == 1:
            return candidates[0]
        if group.strategy == "least-busy":
            lowest = min(s.in_flight for s in candidates)
            return self._weighted([s for s in candidates if s.in_flight == lowest])
        if group.strategy == "latency":
            unmeasured = [s for s in candidates if s.ewma_s is None]
            if unmeasured:
                return self._weighted(unmeasured)
            if self._rng.random() < self._policy.latency_exploration:
                return self._rng.choice(candidates)
            return min(candidates, key=lambda s: (s.ewma_s or 0.0, -s.deployment.weight))
        return self._weighted(candidates)

    def _weighted(self, candidates: list[_State]) -> _State:
        if len(candidates) == 1:
            return candidates[0]
        return self._rng.choices(candidates, weights=[s.deployment.weight for s in candidates])[0]

    def _backoff(self, retry_number: int, retry_after: float | None) -> float:
        policy = self._policy
        base = min(policy.max_backoff_s, policy.retry_backoff_s * 2.0 ** (retry_number - 1))
        delay = base / 2 + self._rng.uniform(0, base / 2)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, policy.max_backoff_s))
        return delay

    def _fallback_chain(self, alias: str) -> list[str]:
        """The alias, then its fallbacks breadth first (its own list in order before theirs)."""
        chain = [alias]
        queue = deque([alias])
        while queue:
            for fallback in self._groups[queue.popleft()].fallbacks:
                if fallback not in chain and fallback in self._groups:
                    chain.append(fallback)
                    queue.append(fallback)
        return chain

    # ----------------------------------------------------------------- circuit breaker

    def _circuit(self, state: _State, now: float) -> CircuitState:
        if state.opened_at is None:
            return "closed"
        if now - state.opened_at >= self._policy.circuit_breaker.cooldown_s:
            return "half-open"
        return "open"

    def _available(self, state: _State, now: float) -> bool:
        circuit = self._circuit(state, now)
        if circuit == "open" or state.at_cap():
            return False
        return not (circuit == "half-open" and state.trial)

    def _acquire(self, state: _State, now: float) -> _Lease:
        trial = self._circuit(state, now) == "half-open"
        state.in_flight += 1
        if trial:
            state.trial = True
            self._emit(
                "router.circuit.half_open",
                logging.INFO,
                alias=state.deployment.alias,
                deployment=state.name,
                state="half-open",
            )
        return _Lease(self, state, trial=trial)

    def _record_success(self, lease: _Lease, *, alias: str) -> None:
        state = lease.state
        sample = max(0.0, self._clock() - lease.started_at)
        self._emit("router.attempt.succeeded", logging.DEBUG, alias=alias, deployment=state.name, duration_s=sample)
        if state.ewma_s is None or state.stale_latency:
            state.ewma_s = sample
            state.stale_latency = False
        else:
            state.ewma_s = _EWMA_ALPHA * sample + (1 - _EWMA_ALPHA) * state.ewma_s
        self._reachable(lease)

    def _reachable(self, lease: _Lease) -> None:
        """The upstream answered: reset the failure count and close an open circuit."""
        state = lease.state
        state.consecutive_failures = 0
        if lease.trial:
            lease.trial = False
            state.trial = False
        if state.opened_at is not None:
            state.opened_at = None
            self._emit(
                "router.circuit.closed",
                logging.INFO,
                alias=state.deployment.alias,
                deployment=state.name,
                state="closed",
            )

    def _record_failure(self, lease: _Lease, error: UpstreamError, *, alias: str, attempt: int | None) -> None:
        state = lease.state
        error.deployment = state.name
        self._emit(
            "router.attempt.failed",
            logging.WARNING,
            alias=alias,
            deployment=state.name,
            provider=state.deployment.provider,
            status=error.status,
            reason=_reason(error.status),
            retryable=error.retryable,
            attempt=attempt,
            duration_s=max(0.0, self._clock() - lease.started_at),
            error=str(error)[:200],
        )
        if not error.retryable:
            self._reachable(lease)
            return
        state.consecutive_failures += 1
        threshold = self._policy.circuit_breaker.failure_threshold
        if lease.trial or (state.opened_at is None and state.consecutive_failures >= threshold):
            lease.trial = False
            state.trial = False
            state.opened_at = self._clock()
            state.stale_latency = True
            self._emit(
                "router.circuit.opened",
                logging.WARNING,
                alias=state.deployment.alias,
                deployment=state.name,
                state="open",
                consecutive_failures=state.consecutive_failures,
                cooldown_s=self._policy.circuit_breaker.cooldown_s,
            )

    def _all_open_error(self, alias: str, chain: list[str]) -> NoHealthyDeploymentError:
        now = self._clock()
        cooldown = self._policy.circuit_breaker.cooldown_s
        waits = [
            state.opened_at + cooldown - now
            for name in chain
            for d in self._groups[name].deployments
            if (state := self._states[d.name]).opened_at is not None
        ]
        retry_after = max(1, math.ceil(min(waits))) if waits else 1
        return NoHealthyDeploymentError(
            f"Every deployment of `{alias}` and its fallbacks is failing; retry in {retry_after}s.",
            headers={"retry-after": str(retry_after)},
        )

    def _emit(self, event: str, level: int, **fields: Any) -> None:
        logger.log(level, event, extra=fields)
        if self._on_event is not None:
            try:
                self._on_event(event, fields)
            except Exception:  # a metrics hook must never break a call
                logger.exception("router.event_hook_failed", extra={"hook_event": event})


__all__ = [
    "DeploymentsBusyError",
    "ModelModeError",
    "ModelNotFoundError",
    "NoHealthyDeploymentError",
    "RoutedStream",
    "Router",
]
