"""The routing file: the example loads, secrets come from the environment, every error names its path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from core.errors import ConfigurationError
from gateway.providers.base import Deployment
from gateway.routing import (
    LOCAL_EMBED_ALIAS,
    OFFLINE_ALIAS,
    ModelGroup,
    RoutingConfig,
    RoutingConfigError,
    load_routing,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway" / "routing.example.yaml"
EXAMPLE_ENV = {"OPENAI_API_KEY": "sk-test-openai", "AZURE_OPENAI_API_KEY": "az-test", "ANTHROPIC_API_KEY": "an-test"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RoutingConfigError) as info:
        load_routing(path, environ=environ or {})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message  # the CLI prints it as one line
    return message.removeprefix(f"{path}: ")


MINIMAL = """
    models:
      - alias: small
        deployments:
          - name: local
            provider: openai
            model: llama3
            api_base: http://127.0.0.1:11434/v1
"""


def test_example_config_loads_with_every_provider() -> None:
    config = load_routing(EXAMPLE, environ=EXAMPLE_ENV)
    providers = {d.provider for d in config.deployments()}
    assert providers == {"openai", "azure", "litellm", "offline", "local-embed"}
    assert {"gpt-4o-mini", "claude-sonnet", "text-embedding-3-small", OFFLINE_ALIAS, LOCAL_EMBED_ALIAS} <= set(
        config.aliases()
    )
    assert config.aliases("embedding") == ["text-embedding-3-small", LOCAL_EMBED_ALIAS]
    group = config.group("gpt-4o-mini")
    assert group is not None
    assert group.fallbacks == ("claude-sonnet", OFFLINE_ALIAS)
    openai_main, azure = group.deployments
    assert openai_main.alias == "gpt-4o-mini" and openai_main.mode == "chat"
    assert openai_main.weight == 3 and openai_main.timeout_s == 30 and openai_main.max_concurrency == 100
    assert openai_main.output_cost_per_token == pytest.approx(6.0e-7)
    assert azure.api_version == "2024-10-21" and azure.cost_model == "azure/gpt-4o-mini"
    bedrock = next(d for d in config.deployments() if d.name == "bedrock-us-east-1")
    assert bedrock.model.startswith("bedrock/") and bedrock.params == {"aws_region_name": "us-east-1"}
    assert bedrock.timeout_s == 60 and bedrock.api_key is None
    embed = next(d for d in config.deployments() if d.name == "openai-embed")
    assert embed.mode == "embedding"
    # Deployments without timeout_s take the router's.
    assert next(d for d in config.deployments() if d.name == "vllm-gpu-1").timeout_s == config.router.timeout_s


def test_env_secrets_are_read_at_load_time_and_hidden(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        models:
          - alias: gpt
            deployments:
              - name: main
                provider: openai
                model: gpt-4o-mini
                api_base: os.environ/UPSTREAM_BASE
                api_key: os.environ/UPSTREAM_KEY
                extra_headers: {X-Org: os.environ/UPSTREAM_ORG}
                params: {region: os.environ/UPSTREAM_REGION, retries: 2}
              - name: plain
                provider: openai
                model: gpt-4o-mini
                api_base: http://127.0.0.1:8000/v1
                api_key: sk-plain-string
        """,
    )
    env = {
        "UPSTREAM_BASE": "http://10.0.0.1/v1",
        "UPSTREAM_KEY": "sk-secret",
        "UPSTREAM_ORG": "org-1",
        "UPSTREAM_REGION": "eu",
    }
    deployments = {d.name: d for d in load_routing(path, environ=env).deployments()}
    main, plain = deployments["main"], deployments["plain"]
    assert isinstance(main.api_key, SecretStr) and main.api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(main)
    assert main.api_base == "http://10.0.0.1/v1"
    assert main.extra_headers == {"X-Org": "org-1"}
    assert main.params == {"region": "eu", "retries": 2}
    assert plain.api_key is not None and plain.api_key.get_secret_value() == "sk-plain-string"


def test_env_secrets_default_to_the_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTING_TEST_KEY", "sk-from-env")
    path = write(tmp_path, MINIMAL.replace("api_base:", "api_key: os.environ/ROUTING_TEST_KEY\n            api_base:"))
    (deployment, *_) = load_routing(path).deployments()
    assert deployment.api_key is not None and deployment.api_key.get_secret_value() == "sk-from-env"


@pytest.mark.parametrize(("value", "why"), [("", "is empty"), (None, "is not set")])
def test_missing_env_secret_names_the_deployment(tmp_path: Path, value: str | None, why: str) -> None:
    env = {} if value is None else {"NOPE_KEY": value}
    text = MINIMAL.replace("api_base:", "api_key: os.environ/NOPE_KEY\n            api_base:")
    message = error_of(tmp_path, text, env)
    assert message == f"models[0].deployments[0].api_key: environment variable NOPE_KEY {why} (deployment local)"
    assert isinstance(RoutingConfigError("x"), ConfigurationError)


def deployment_yaml(**fields: object) -> str:
    base: dict[str, object] = {
        "name": "d",
        "provider": "openai",
        "model": "m",
        "api_base": "http://127.0.0.1:1/v1",
    }
    base.update(fields)
    lines = [f"{k}: {v}" for k, v in base.items() if v is not None]
    return "\n".join(("      - " if i == 0 else "        ") + line for i, line in enumerate(lines))


def one_group(**fields: object) -> str:
    return "models:\n  - alias: a\n    deployments:\n" + deployment_yaml(**fields) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (one_group(weight=0), "models[0].deployments[0].weight: must be > 0"),
        (one_group(weight=-2), "models[0].deployments[0].weight: must be > 0"),
        (one_group(timeout_s=0), "models[0].deployments[0].timeout_s: must be > 0"),
        (one_group(max_concurrency=0), "models[0].deployments[0].max_concurrency: must be >= 1"),
        (one_group(input_cost_per_token=-1), "models[0].deployments[0].input_cost_per_token: must be >= 0"),
        (one_group(wieght=2), "models[0].deployments[0].wieght: unknown key"),
        (one_group(name=None), "models[0].deployments[0].name: is required"),
        (
            one_group(provider="bard"),
            "models[0].deployments[0].provider: must be one of 'openai', 'azure', 'litellm', 'offline' or 'local-embed'",
        ),
        (one_group(api_base=None), "models[0].deployments[0].api_base: required for provider openai"),
        (
            one_group(provider="azure", api_version=None),
            "models[0].deployments[0].api_version: required for provider azure",
        ),
        (
            one_group(provider="azure", api_base=None, api_version="2024-10-21"),  # unquoted: a YAML date, accepted
            "models[0].deployments[0].api_base: required for provider azure",
        ),
        ("router: {num_retries: -1}\nmodels: []\n", "router.num_retries: must be >= 0"),
        ("router: {circuit_breaker: {cooldown_s: 0}}\n", "router.circuit_breaker.cooldown_s: must be > 0"),
        ("models:\n  - alias: a\n    deployments: []\n", "models[0].deployments: must not be empty"),
        (
            "models:\n  - alias: a\n    mode: images\n    deployments: []\n",
            "models[0].mode: must be one of 'chat' or 'embedding'",
        ),
        ("modles: []\n", "modles: unknown key"),
    ],
)
def test_field_errors_name_their_path(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text).split("; ")


def two_groups(
    second_alias: str = "b", *, second_mode: str = "chat", fallbacks: str = "[]", second_fallbacks: str = "[]"
) -> str:
    return f"""
models:
  - alias: a
    fallbacks: {fallbacks}
    deployments:
      - {{name: a1, provider: offline, model: copilot-offline/default}}
  - alias: {second_alias}
    mode: {second_mode}
    fallbacks: {second_fallbacks}
    deployments:
      - {{name: b1, provider: {"local-embed" if second_mode == "embedding" else "offline"}, model: x}}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (two_groups("a"), "models[1].alias: duplicate alias 'a'"),
        (
            two_groups().replace("name: b1", "name: a1"),
            "models[1].deployments[0].name: duplicate deployment name 'a1' (first at models[0].deployments[0])",
        ),
        (two_groups(fallbacks="[nowhere]"), "models[0].fallbacks[0]: unknown alias 'nowhere'"),
        (
            two_groups(second_mode="embedding", fallbacks="[b]"),
            "models[0].fallbacks[0]: 'b' is a embedding alias, 'a' is chat",
        ),
        (
            two_groups(fallbacks="[b]", second_fallbacks="[a]"),
            "models[0].fallbacks: fallbacks form a cycle: a -> b -> a",
        ),
        (two_groups(fallbacks="[a]"), "models[0].fallbacks: fallbacks form a cycle: a -> a"),
        (
            two_groups().replace(
                "provider: offline, model: copilot-offline/default", "provider: local-embed, model: e"
            ),
            "models[0].deployments[0].provider: local-embed serves embeddings only",
        ),
    ],
)
def test_cross_checks_name_their_path(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text).split("; ")


def test_every_problem_is_reported_on_one_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, one_group(weight=0, timeout_s=-1))
    assert message == "models[0].deployments[0].weight: must be > 0; models[0].deployments[0].timeout_s: must be > 0"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "must be a mapping with 'router' and 'models' keys"),
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RoutingConfigError, match=r"nope\.yaml: cannot read"):
        load_routing(tmp_path / "nope.yaml")


def test_without_a_file_the_builtins_are_the_config() -> None:
    config = load_routing(None)
    assert config.aliases() == [OFFLINE_ALIAS, LOCAL_EMBED_ALIAS]
    assert config.aliases("chat") == [OFFLINE_ALIAS]
    (offline,) = config.group(OFFLINE_ALIAS).deployments  # type: ignore[union-attr]
    assert (offline.provider, offline.model, offline.mode) == ("offline", "copilot-offline/default", "chat")
    (embed,) = config.group(LOCAL_EMBED_ALIAS).deployments  # type: ignore[union-attr]
    assert (embed.provider, embed.model, embed.mode) == ("local-embed", "copilot-offline/local-embed", "embedding")


def test_builtins_fill_a_missing_mode_or_a_named_fallback(tmp_path: Path) -> None:
    # Only a chat alias: the offline chat model is not added, the local embedder is (no embedding alias).
    config = load_routing(write(tmp_path, MINIMAL), environ={})
    assert config.aliases() == ["small", LOCAL_EMBED_ALIAS]
    # A fallback naming a built-in brings it in.
    text = MINIMAL.replace("  - alias: small\n", "  - alias: small\n        fallbacks: [copilot-offline]\n")
    config = load_routing(write(tmp_path, text), environ={})
    assert config.aliases() == ["small", OFFLINE_ALIAS, LOCAL_EMBED_ALIAS]
    # An empty file keeps chat and embeddings available.
    assert load_routing(write(tmp_path, ""), environ={}).aliases() == [OFFLINE_ALIAS, LOCAL_EMBED_ALIAS]
    # include_builtins adds both even when every mode is covered.
    embed_group = (
        "\n  - alias: emb\n    mode: embedding\n    deployments:\n      - {name: e1, provider: local-embed, model: x}\n"
    )
    text = "include_builtins: true\n" + textwrap.dedent(MINIMAL) + embed_group
    config = load_routing(write(tmp_path, text), environ={})
    assert config.aliases() == ["small", "emb", OFFLINE_ALIAS, LOCAL_EMBED_ALIAS]


def test_a_file_may_redefine_a_builtin_alias(tmp_path: Path) -> None:
    text = """
        models:
          - alias: copilot-offline
            deployments:
              - {name: capped-offline, provider: offline, model: copilot-offline/default, max_concurrency: 2}
    """
    config = load_routing(write(tmp_path, text), environ={})
    assert config.aliases() == [OFFLINE_ALIAS, LOCAL_EMBED_ALIAS]
    group = config.group(OFFLINE_ALIAS)
    assert group is not None and [d.name for d in group.deployments] == ["capped-offline"]


def test_hand_built_configs_are_checked_too() -> None:
    deployment = Deployment(name="x", alias="a", provider="offline", model="m")
    with pytest.raises(ValidationError, match=r"models\[0\]\.fallbacks\[0\]: unknown alias 'b'"):
        RoutingConfig(models=(ModelGroup(alias="a", fallbacks=("b",), deployments=(deployment,)),))
