"""Gateway Prometheus metrics: recorded values come out of the exposition, one process or several."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import CircuitState, GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    result: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def value(body: bytes, name: str, **labels: str) -> float | None:
    return samples(body).get((name, frozenset(labels.items())))


def test_recorded_metrics_are_rendered() -> None:
    metrics = GatewayMetrics()
    metrics.request_started("chat")
    metrics.request_started("chat")
    metrics.request_finished("chat", "gpt-4o-mini", 200, 0.12)
    metrics.request_finished("chat", "gpt-4o-mini", 429, 0.003)
    metrics.request_started("embeddings")
    metrics.observe_upstream("openai-main", 0.1)
    metrics.observe_upstream("openai-main", 2.0, ok=False)
    metrics.observe_ttft("gpt-4o-mini", 0.04)
    metrics.add_usage("gpt-4o-mini", prompt_tokens=10, completion_tokens=5, cost_usd=0.002, tenant="t-1")
    metrics.add_usage("gpt-4o-mini", prompt_tokens=1, completion_tokens=0, cost_usd=0.0005, tenant="t-1")
    metrics.cache_lookup("chat", hit=True)
    metrics.cache_lookup("chat", hit=False)
    metrics.cache_lookup("chat", hit=False)
    metrics.rate_limit_refused("rpm")
    metrics.upstream_error("openai-main", "5xx")
    metrics.upstream_retry("openai-main")
    metrics.fallback_used("gpt-4o-mini")
    metrics.set_circuit_state("openai-main", CircuitState.OPEN)
    metrics.set_usage_pending(7)
    metrics.tracing_dropped()
    metrics.tracing_dropped(2)

    body, content_type = metrics.render()

    assert content_type.startswith("text/plain")
    p = "copilot_gateway"
    assert value(body, f"{p}_requests_total", endpoint="chat", model="gpt-4o-mini", status="200") == 1
    assert value(body, f"{p}_requests_total", endpoint="chat", model="gpt-4o-mini", status="429") == 1
    assert value(body, f"{p}_request_duration_seconds_count", endpoint="chat", model="gpt-4o-mini") == 2
    assert value(body, f"{p}_request_duration_seconds_sum", endpoint="chat", model="gpt-4o-mini") == pytest.approx(
        0.123
    )
    assert value(body, f"{p}_request_duration_seconds_bucket", endpoint="chat", model="gpt-4o-mini", le="0.005") == 1
    assert value(body, f"{p}_in_flight_requests", endpoint="chat") == 0
    assert value(body, f"{p}_in_flight_requests", endpoint="embeddings") == 1
    assert value(body, f"{p}_upstream_duration_seconds_count", deployment="openai-main", outcome="ok") == 1
    assert value(body, f"{p}_upstream_duration_seconds_count", deployment="openai-main", outcome="error") == 1
    assert value(body, f"{p}_time_to_first_token_seconds_count", model="gpt-4o-mini") == 1
    assert value(body, f"{p}_tokens_total", model="gpt-4o-mini", kind="prompt") == 11
    assert value(body, f"{p}_tokens_total", model="gpt-4o-mini", kind="completion") == 5
    assert value(body, f"{p}_cost_usd_total", model="gpt-4o-mini", tenant="t-1") == pytest.approx(0.0025)
    assert value(body, f"{p}_cache_lookups_total", endpoint="chat", result="hit") == 1
    assert value(body, f"{p}_cache_lookups_total", endpoint="chat", result="miss") == 2
    assert value(body, f"{p}_rate_limited_total", limit="rpm") == 1
    assert value(body, f"{p}_upstream_errors_total", deployment="openai-main", reason="5xx") == 1
    assert value(body, f"{p}_upstream_retries_total", deployment="openai-main") == 1
    assert value(body, f"{p}_fallbacks_total", model="gpt-4o-mini") == 1
    assert value(body, f"{p}_circuit_state", deployment="openai-main") == 2
    assert value(body, f"{p}_usage_pending") == 7
    assert value(body, f"{p}_tracing_dropped_total") == 3
    assert b"merchant" not in body


def test_instances_do_not_share_values() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.rate_limit_refused("tpm")

    assert value(first.render()[0], "copilot_gateway_rate_limited_total", limit="tpm") == 1
    assert value(second.render()[0], "copilot_gateway_rate_limited_total", limit="tpm") is None


def test_open_ended_labels_are_capped() -> None:
    metrics = GatewayMetrics(max_label_values=2)
    for model in ("a", "b", "made-up-1", "made-up-2"):
        metrics.request_started("chat")
        metrics.request_finished("chat", model, 404, 0.001)
    metrics.request_finished("chat", "a", 200, 0.001)

    body, _ = metrics.render()

    requests = {k: v for k, v in samples(body).items() if k[0] == "copilot_gateway_requests_total"}
    models = {dict(labels)["model"] for _, labels in requests}
    assert models == {"a", "b", "other"}
    assert value(body, "copilot_gateway_requests_total", endpoint="chat", model="other", status="404") == 2


def test_openmetrics_when_asked() -> None:
    metrics = GatewayMetrics()
    metrics.cache_lookup("chat", hit=True)

    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")

    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    assert b'copilot_gateway_cache_lookups_total{endpoint="chat",result="hit"} 1.0' in body


WORKER = textwrap.dedent(
    """
    import sys
    from gateway.metrics import CircuitState, GatewayMetrics

    metrics = GatewayMetrics()
    assert metrics.multiprocess
    metrics.request_started("chat")  # left in flight on purpose
    metrics.request_started("chat")
    metrics.request_finished("chat", "gpt-4o-mini", 200, 0.05)
    metrics.add_usage("gpt-4o-mini", prompt_tokens=int(sys.argv[1]), completion_tokens=1, cost_usd=0.01, tenant="t")
    metrics.set_circuit_state("openai-main", CircuitState(int(sys.argv[2])))
    print(__import__("os").getpid())
    """
)

RENDER = textwrap.dedent(
    """
    import sys
    from gateway.metrics import GatewayMetrics

    body, content_type = GatewayMetrics().render()
    sys.stdout.write(content_type + "\\n")
    sys.stdout.buffer.write(body)
    """
)


def _python(code: str, *args: str, multiproc_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_workers_are_aggregated(tmp_path: Path) -> None:
    pids = [
        int(_python(WORKER, "10", "0", multiproc_dir=tmp_path)),
        int(_python(WORKER, "20", "2", multiproc_dir=tmp_path)),
    ]
    assert list(tmp_path.glob("*.db"))

    content_type, _, body_text = _python(RENDER, multiproc_dir=tmp_path).partition("\n")
    body = body_text.encode()

    assert content_type.startswith("text/plain")
    p = "copilot_gateway"
    assert value(body, f"{p}_requests_total", endpoint="chat", model="gpt-4o-mini", status="200") == 2
    assert value(body, f"{p}_request_duration_seconds_count", endpoint="chat", model="gpt-4o-mini") == 2
    assert value(body, f"{p}_tokens_total", model="gpt-4o-mini", kind="prompt") == 30
    assert value(body, f"{p}_cost_usd_total", model="gpt-4o-mini", tenant="t") == pytest.approx(0.02)
    assert value(body, f"{p}_circuit_state", deployment="openai-main") == 2  # the worst worker
    assert value(body, f"{p}_in_flight_requests", endpoint="chat") == 2  # one per worker

    # A worker that exited no longer counts in the live gauges; counters keep its totals.
    GatewayMetrics.mark_process_dead(pids[1], tmp_path)
    body = _python(RENDER, multiproc_dir=tmp_path).partition("\n")[2].encode()
    assert value(body, f"{p}_in_flight_requests", endpoint="chat") == 1
    assert value(body, f"{p}_circuit_state", deployment="openai-main") == 0
    assert value(body, f"{p}_tokens_total", model="gpt-4o-mini", kind="prompt") == 30
