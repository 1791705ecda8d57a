"""The routing configuration: which deployments serve which model alias, and how.

The gateway reads one YAML file (``copilot gateway serve --config FILE``; see
``gateway/routing.example.yaml`` for every provider)::

    router:
      num_retries: 2          # retries of retryable errors per deployment
      retry_backoff_s: 0.25   # exponential with jitter, honours Retry-After up to max_backoff_s
      max_backoff_s: 4
      max_attempts: 8         # upstream calls per request, all deployments and fallbacks together
      timeout_s: 60           # default deployment timeout
      latency_exploration: 0.05
      circuit_breaker: {failure_threshold: 5, cooldown_s: 30}
    models:
      - alias: gpt-4o-mini
        mode: chat                      # chat | embedding
        strategy: weighted              # weighted | least-busy | latency
        fallbacks: [copilot-offline]
        deployments:
          - name: openai-main
            provider: openai            # openai | azure | litellm | offline | local-embed
            model: gpt-4o-mini
            api_base: https://api.openai.com/v1
            api_key: os.environ/OPENAI_API_KEY
            weight: 3

Secrets
    ``os.environ/NAME`` in ``api_key``, ``api_base``, ``api_version``, an
    ``extra_headers`` value or a string ``params`` value is replaced by the
    environment variable ``NAME`` when the file is loaded (a missing or empty
    variable is an error naming the deployment). ``api_key`` becomes a
    :class:`~pydantic.SecretStr`; plain strings are accepted but keep keys out
    of files you commit.

Built-in aliases
    ``copilot-offline`` (the built-in offline model, chat) and
    ``copilot-local-embed`` (the built-in embedder, embedding) need nothing
    installed or configured. Without a file they are the whole configuration.
    With a file, a built-in alias is added when the file sets
    ``include_builtins: true``, when a ``fallbacks`` list names it, or when the
    file has no alias of its mode at all, so chat and embeddings always have
    somewhere to go. A file may also define its own group under a built-in
    alias name (e.g. to cap its concurrency); that group replaces the built-in.

Validation
    Every problem is reported with the file and the path of the offending
    value on one line, e.g. ``routing.yaml: models[1].deployments[0].weight:
    must be > 0``: unknown keys, wrong types, duplicate aliases or deployment
    names, fallbacks to unknown aliases, to an alias of another mode or in a
    cycle, and provider requirements (``openai``/``azure`` need ``api_base``;
    ``azure`` needs ``api_version``; ``offline`` serves chat only and
    ``local-embed`` embeddings only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from core.config import process_environment
from core.errors import ConfigurationError
from gateway.providers.base import Deployment, Mode, ProviderKind

Strategy = Literal["weighted", "least-busy", "latency"]

OFFLINE_ALIAS = "copilot-offline"
LOCAL_EMBED_ALIAS = "copilot-local-embed"
_ENV_PREFIX = "os.environ/"


class RoutingConfigError(ConfigurationError):
    """The routing file cannot be read or is invalid; the message names the file and the path."""

    code = "routing_config"
    title = "Invalid routing configuration"


# --------------------------------------------------------------------------- public model


class CircuitBreakerPolicy(BaseModel):
    """When a deployment is taken out of rotation, and for how long.

    Attributes:
        failure_threshold: Consecutive retryable failures that open the circuit.
        cooldown_s: Seconds an open circuit waits before one trial call (half-open).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class RouterPolicy(BaseModel):
    """Retry, timeout and circuit-breaker settings shared by every alias.

    Attributes:
        num_retries: Retries of a retryable error per deployment (so each
            deployment is tried at most ``1 + num_retries`` times per call).
        retry_backoff_s: First backoff; doubles per retry of the same
            deployment, with jitter.
        max_backoff_s: Upper bound of one backoff, and of a honoured ``Retry-After``.
        max_attempts: Upstream calls per request, over all deployments and fallbacks.
        timeout_s: Timeout of deployments that set none.
        latency_exploration: Share of ``latency``-strategy picks made at random,
            so a deployment that was slow (or has recovered) gets measured again.
        circuit_breaker: Per-deployment circuit breaker.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_retries: int = Field(default=2, ge=0)
    retry_backoff_s: float = Field(default=0.25, ge=0)
    max_backoff_s: float = Field(default=4.0, ge=0)
    max_attempts: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    latency_exploration: float = Field(default=0.05, ge=0, le=1)
    circuit_breaker: CircuitBreakerPolicy = CircuitBreakerPolicy()


class ModelGroup(BaseModel):
    """One model alias and the deployments that serve it.

    Attributes:
        alias: The model name clients ask for.
        mode: ``chat`` or ``embedding``.
        strategy: How a deployment is picked: ``weighted`` (random by weight),
            ``least-busy`` (fewest in flight) or ``latency`` (lowest moving
            average latency).
        fallbacks: Aliases (same mode) tried, in order, after every deployment
            of this one failed.
        deployments: The upstreams, each with ``alias`` and ``mode`` of this group.
    """

    model_config = ConfigDict(frozen=True)

    alias: str
    mode: Mode = "chat"
    strategy: Strategy = "weighted"
    fallbacks: tuple[str, ...] = ()
    deployments: tuple[Deployment, ...]


class RoutingConfig(BaseModel):
    """The validated routing configuration (see the module docstring for the rules)."""

    model_config = ConfigDict(frozen=True)

    router: RouterPolicy = RouterPolicy()
    models: tuple[ModelGroup, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _problems(self.models, [f"models[{i}]" for i in range(len(self.models))])
        if problems:
            raise ValueError("; ".join(f"{path}: {message}" for path, message in problems))
        return self

    def group(self, alias: str) -> ModelGroup | None:
        """The group of ``alias``, or None."""
        return next((group for group in self.models if group.alias == alias), None)

    def aliases(self, mode: Mode | None = None) -> list[str]:
        """Aliases in configuration order, optionally only those of ``mode``."""
        return [group.alias for group in self.models if mode is None or group.mode == mode]

    def deployments(self) -> list[Deployment]:
        """Every deployment of every alias."""
        return [deployment for group in self.models for deployment in group.deployments]


# --------------------------------------------------------------------------- built-ins


def builtin_groups(router: RouterPolicy | None = None) -> dict[str, ModelGroup]:
    """The built-in aliases, ``copilot-offline`` (chat) and ``copilot-local-embed`` (embedding)."""
    timeout_s = (router or RouterPolicy()).timeout_s
    return {
        OFFLINE_ALIAS: ModelGroup(
            alias=OFFLINE_ALIAS,
            mode="chat",
            deployments=(
                Deployment(
                    name=OFFLINE_ALIAS,
                    alias=OFFLINE_ALIAS,
                    provider="offline",
                    model="copilot-offline/default",
                    mode="chat",
                    timeout_s=timeout_s,
                    input_cost_per_token=0.0,
                    output_cost_per_token=0.0,
                ),
            ),
        ),
        LOCAL_EMBED_ALIAS: ModelGroup(
            alias=LOCAL_EMBED_ALIAS,
            mode="embedding",
            deployments=(
                Deployment(
                    name=LOCAL_EMBED_ALIAS,
                    alias=LOCAL_EMBED_ALIAS,
                    provider="local-embed",
                    model="copilot-offline/local-embed",
                    mode="embedding",
                    timeout_s=timeout_s,
                    input_cost_per_token=0.0,
                    output_cost_per_token=0.0,
                ),
            ),
        ),
    }


def builtin_config() -> RoutingConfig:
    """The configuration used when no routing file is given."""
    return RoutingConfig(models=tuple(builtin_groups().values()))


# --------------------------------------------------------------------------- file schema


class _DeploymentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    provider: ProviderKind
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    weight: float = Field(default=1.0, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    input_cost_per_token: float | None = Field(default=None, ge=0)
    output_cost_per_token: float | None = Field(default=None, ge=0)
    cost_model: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("api_version", mode="before")
    @classmethod
    def _unquoted_date(cls, value: object) -> object:
        # YAML reads an unquoted 2024-10-21 as a date; Azure API versions look exactly like that.
        return value.isoformat() if isinstance(value, date) else value


class _GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alias: str = Field(min_length=1)
    mode: Mode = "chat"
    strategy: Strategy = "weighted"
    fallbacks: list[str] = Field(default_factory=list)
    deployments: list[_DeploymentSpec] = Field(min_length=1)


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    router: RouterPolicy = RouterPolicy()
    include_builtins: bool = False
    models: list[_GroupSpec] = Field(default_factory=list)


# --------------------------------------------------------------------------- loading


def load_routing(path: Path | None, *, environ: Mapping[str, str] | None = None) -> RoutingConfig:
    """Load and validate a routing file, or the built-in configuration.

    Args:
        path: The YAML file; None gives the built-in aliases only.
        environ: Where ``os.environ/NAME`` references are looked up (default:
            the process environment, read once here at load time).

    Returns:
        The validated configuration, with secrets resolved.

    Raises:
        RoutingConfigError: The file cannot be read or parsed, or is invalid;
            the message is one line naming the file and the offending path.
    """
    if path is None:
        return builtin_config()
    env = process_environment() if environ is None else environ
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{label}: cannot read: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1} column {mark.column + 1}: "
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RoutingConfigError(f"{label}: {where}invalid YAML: {problem}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RoutingConfigError(f"{label}: must be a mapping with 'router' and 'models' keys")
    try:
        spec = _FileSpec.model_validate(raw)
    except ValidationError as exc:
        raise RoutingConfigError(f"{label}: {_describe(exc)}") from exc
    return _build(spec, env, label)


def _build(spec: _FileSpec, env: Mapping[str, str], label: str) -> RoutingConfig:
    problems: list[tuple[str, str]] = []
    groups: list[ModelGroup] = []
    for gi, group_spec in enumerate(spec.models):
        deployments: list[Deployment] = []
        for di, dep in enumerate(group_spec.deployments):
            path = f"models[{gi}].deployments[{di}]"
            resolver = _Resolver(env, path, dep.name, problems)
            api_key = resolver.value("api_key", dep.api_key)
            deployments.append(
                Deployment(
                    name=dep.name,
                    alias=group_spec.alias,
                    provider=dep.provider,
                    model=dep.model,
                    mode=group_spec.mode,
                    api_base=resolver.value("api_base", dep.api_base),
                    api_key=SecretStr(api_key) if api_key is not None else None,
                    api_version=resolver.value("api_version", dep.api_version),
                    weight=dep.weight,
                    timeout_s=dep.timeout_s if dep.timeout_s is not None else spec.router.timeout_s,
                    max_concurrency=dep.max_concurrency,
                    input_cost_per_token=dep.input_cost_per_token,
                    output_cost_per_token=dep.output_cost_per_token,
                    cost_model=dep.cost_model,
                    extra_headers={
                        k: resolver.value(f"extra_headers.{k}", v) or "" for k, v in dep.extra_headers.items()
                    },
                    params={
                        k: resolver.value(f"params.{k}", v) if isinstance(v, str) else v for k, v in dep.params.items()
                    },
                )
            )
        groups.append(
            ModelGroup(
                alias=group_spec.alias,
                mode=group_spec.mode,
                strategy=group_spec.strategy,
                fallbacks=tuple(group_spec.fallbacks),
                deployments=tuple(deployments),
            )
        )
    labels = [f"models[{i}]" for i in range(len(groups))]
    defined = {group.alias for group in groups}
    referenced = {alias for group in groups for alias in group.fallbacks}
    modes = {group.mode for group in groups}
    for alias, builtin in builtin_groups(spec.router).items():
        if alias in defined:
            continue
        if spec.include_builtins or alias in referenced or builtin.mode not in modes:
            groups.append(builtin)
            labels.append(f"built-in {alias}")
    problems.extend(_problems(groups, labels))
    if problems:
        raise RoutingConfigError(f"{label}: " + "; ".join(f"{path}: {message}" for path, message in problems))
    return RoutingConfig(router=spec.router, models=tuple(groups))


class _Resolver:
    """Replaces ``os.environ/NAME`` values, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str], path: str, deployment: str, problems: list[tuple[str, str]]) -> None:
        self._env = env
        self._path = path
        self._deployment = deployment
        self._problems = problems

    def value(self, field: str, value: str | None) -> str | None:
        if value is None or not value.startswith(_ENV_PREFIX):
            return value
        name = value[len(_ENV_PREFIX) :].strip()
        if not name:
            self._problems.append((f"{self._path}.{field}", "os.environ/ needs a variable name"))
            return None
        resolved = self._env.get(name)
        if not resolved:
            state = "is empty" if resolved == "" else "is not set"
            self._problems.append(
                (f"{self._path}.{field}", f"environment variable {name} {state} (deployment {self._deployment})")
            )
            return None
        return resolved


def _problems(groups: Sequence[ModelGroup], labels: Sequence[str]) -> list[tuple[str, str]]:
    """Cross-field checks shared by the loader and :class:`RoutingConfig`; (path, message) pairs."""
    problems: list[tuple[str, str]] = []
    by_alias: dict[str, ModelGroup] = {}
    alias_labels: dict[str, str] = {}
    deployment_paths: dict[str, str] = {}
    for group, label in zip(groups, labels, strict=True):
        if group.alias in by_alias:
            problems.append((f"{label}.alias", f"duplicate alias {group.alias!r}"))
        else:
            by_alias[group.alias] = group
            alias_labels[group.alias] = label
        if not group.deployments:
            problems.append((f"{label}.deployments", "needs at least one deployment"))
        for di, dep in enumerate(group.deployments):
            path = f"{label}.deployments[{di}]"
            if dep.name in deployment_paths:
                problems.append(
                    (f"{path}.name", f"duplicate deployment name {dep.name!r} (first at {deployment_paths[dep.name]})")
                )
            else:
                deployment_paths[dep.name] = path
            if dep.alias != group.alias or dep.mode != group.mode:
                problems.append((path, f"alias/mode must be those of its group ({group.alias}, {group.mode})"))
            if dep.provider in ("openai", "azure") and not dep.api_base:
                problems.append((f"{path}.api_base", f"required for provider {dep.provider}"))
            if dep.provider == "azure" and not dep.api_version:
                problems.append((f"{path}.api_version", "required for provider azure"))
            if dep.provider == "offline" and group.mode != "chat":
                problems.append((f"{path}.provider", "offline serves chat only"))
            if dep.provider == "local-embed" and group.mode != "embedding":
                problems.append((f"{path}.provider", "local-embed serves embeddings only"))
            if dep.weight <= 0:
                problems.append((f"{path}.weight", "must be > 0"))
            if dep.timeout_s <= 0:
                problems.append((f"{path}.timeout_s", "must be > 0"))
            if dep.max_concurrency is not None and dep.max_concurrency < 1:
                problems.append((f"{path}.max_concurrency", "must be >= 1"))
    for group, label in zip(groups, labels, strict=True):
        for fi, alias in enumerate(group.fallbacks):
            path = f"{label}.fallbacks[{fi}]"
            target = by_alias.get(alias)
            if target is None:
                problems.append((path, f"unknown alias {alias!r}"))
            elif target.mode != group.mode:
                problems.append((path, f"{alias!r} is a {target.mode} alias, {group.alias!r} is {group.mode}"))
    cycle = _find_cycle({alias: [f for f in group.fallbacks if f in by_alias] for alias, group in by_alias.items()})
    if cycle:
        problems.append((f"{alias_labels[cycle[0]]}.fallbacks", "fallbacks form a cycle: " + " -> ".join(cycle)))
    return problems


def _find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of the fallback graph as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    for start in edges:
        if start in done:
            continue
        # Iterative DFS; `stack` holds (node, next child index), `on_path` the current path.
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path = [start]
        while stack:
            node, index = stack[-1]
            children = edges.get(node, ())
            if index >= len(children):
                stack.pop()
                on_path.pop()
                done.add(node)
                continue
            stack[-1] = (node, index + 1)
            child = children[index]
            if child in on_path:
                return [*on_path[on_path.index(child) :], child]
            if child not in done:
                stack.append((child, 0))
                on_path.append(child)
    return None


_MESSAGES = {
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than_equal": "must be <= {le:g}",
    "missing": "is required",
    "extra_forbidden": "unknown key",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
}


def _describe(exc: ValidationError) -> str:
    """Pydantic errors as ``path: message; ...`` with YAML-style paths."""
    parts = []
    for error in exc.errors(include_url=False):
        path = _loc(error["loc"])
        template = _MESSAGES.get(error["type"])
        ctx = error.get("ctx") or {}
        if template is not None:
            message = template.format(**ctx)
        elif error["type"] == "literal_error":
            message = f"must be one of {ctx.get('expected', '')}"
        else:
            message = error["msg"][:1].lower() + error["msg"][1:]
        parts.append(f"{path}: {message}" if path else message)
    return "; ".join(parts)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


__all__ = [
    "LOCAL_EMBED_ALIAS",
    "OFFLINE_ALIAS",
    "CircuitBreakerPolicy",
    "ModelGroup",
    "RouterPolicy",
    "RoutingConfig",
    "RoutingConfigError",
    "Strategy",
    "builtin_config",
    "builtin_groups",
    "load_routing",
]
