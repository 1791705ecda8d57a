"""Gateway tracing: records become Langfuse generations at a local OTLP receiver (real SDK, real HTTP)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from pydantic import SecretStr

from core.config import LangfuseSettings
from gateway.tracing import GenerationRecord, Tracer, get_langfuse
from tests.otlp_receiver import OtlpReceiver

PK, SK = "pk-lf-test", "sk-lf-test"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver(PK, SK) as rx:
        yield rx


@pytest.fixture
def make_tracer() -> Iterator[Callable[..., Tracer]]:
    tracers: list[Tracer] = []

    def make(host: str, *, on_drop: Callable[[], None] | None = None, **overrides: Any) -> Tracer:
        settings = LangfuseSettings(
            host=host, public_key=PK, secret_key=SecretStr(SK), **{"export_timeout_s": 2.0, **overrides}
        )
        tracer = Tracer(settings, environment="test", on_drop=on_drop)
        tracers.append(tracer)
        return tracer

    yield make
    for tracer in tracers:
        tracer.shutdown(timeout_s=5)


def make_record(**overrides: Any) -> GenerationRecord:
    end = time.time_ns()
    fields: dict[str, Any] = {
        "name": "chat",
        "model": "gpt-4o-mini",
        "deployment": "openai-main",
        "provider_model": "gpt-4o-mini-2024-07-18",
        "input": [{"role": "user", "content": "How were sales last week?"}],
        "output": "Sales were up.",
        "prompt_tokens": 12,
        "completion_tokens": 4,
        "cost_usd": 0.0000042,
        "start_ns": end - 250_000_000,
        "end_ns": end,
        "key_id": "key-1",
        "tenant_id": "tenant-a",
        "merchant_id": "merchant-7",
        "request_id": "req-1",
    }
    fields.update(overrides)
    return GenerationRecord(**fields)


def meta(span: dict[str, Any], key: str) -> Any:
    """Observation metadata values are JSON-encoded, as the Langfuse v5 SDK writes them."""
    return json.loads(span["attributes"][f"langfuse.observation.metadata.{key}"])


def test_record_becomes_a_langfuse_generation(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    tracer = make_tracer(receiver.url)
    rec = make_record(
        user_id="user-3",
        session_id="session-9",
        trace_name="ask",
        tags=["copilot", "ask"],
        stream=True,
        ttft_ns=40_000_000,
        model_parameters={"temperature": 0.2, "max_tokens": 256},
    )

    tracer.record(rec)
    assert tracer.flush(10)

    [span] = receiver.wait_for(lambda s: s["attributes"].get("langfuse.observation.metadata.request_id") == '"req-1"')
    attrs = span["attributes"]
    assert span["name"] == "chat"
    assert span["scope"] == "langfuse-sdk" and span["scope_attributes"] == {"public_key": PK}
    assert span["parent_span_id"] is None  # its own trace
    assert (span["start_ns"], span["end_ns"]) == (rec.start_ns, rec.end_ns)
    assert attrs["langfuse.observation.type"] == "generation"
    assert attrs["langfuse.observation.model.name"] == "gpt-4o-mini-2024-07-18"
    assert json.loads(attrs["langfuse.observation.usage_details"]) == {"input": 12, "output": 4, "total": 16}
    assert json.loads(attrs["langfuse.observation.cost_details"]) == {"total": pytest.approx(0.0000042)}
    assert json.loads(attrs["langfuse.observation.input"]) == rec.input
    assert attrs["langfuse.observation.output"] == "Sales were up."
    assert json.loads(attrs["langfuse.observation.model.parameters"]) == {"temperature": 0.2, "max_tokens": 256}
    completion_start = json.loads(attrs["langfuse.observation.completion_start_time"])
    assert completion_start.endswith("Z") and completion_start.startswith(time.strftime("%Y", time.gmtime()))
    assert attrs["user.id"] == "user-3"
    assert attrs["session.id"] == "session-9"
    assert attrs["langfuse.trace.name"] == "ask"
    assert attrs["langfuse.trace.tags"] == ["copilot", "ask"]
    assert attrs["langfuse.environment"] == "test"
    assert "langfuse.observation.level" not in attrs
    assert meta(span, "key_id") == "key-1"
    assert meta(span, "tenant_id") == "tenant-a"
    assert meta(span, "merchant_id") == "merchant-7"
    assert meta(span, "model_alias") == "gpt-4o-mini"
    assert meta(span, "deployment") == "openai-main"
    assert meta(span, "stream") is True
    assert meta(span, "cache_hit") is False
    assert span["resource"]["service.name"] == "copilot-gateway"

    post = receiver.trace_posts()[-1]
    headers = {k.lower(): v for k, v in post["headers"].items()}
    assert headers["content-encoding"] == "gzip"
    assert headers["x-langfuse-public-key"] == PK
    assert receiver.unauthorized == 0


def test_traceparent_nests_the_generation_under_the_caller(
    receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]
) -> None:
    tracer = make_tracer(receiver.url)

    tracer.record(make_record(request_id="nested", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
    tracer.record(make_record(request_id="bad-header", traceparent="not-a-traceparent"))
    assert tracer.flush(10)

    [nested] = receiver.wait_for(
        lambda s: s["attributes"].get("langfuse.observation.metadata.request_id") == '"nested"'
    )
    assert nested["trace_id"] == TRACE_ID
    assert nested["parent_span_id"] == PARENT_ID
    [orphan] = receiver.wait_for(
        lambda s: s["attributes"].get("langfuse.observation.metadata.request_id") == '"bad-header"'
    )
    assert orphan["parent_span_id"] is None and orphan["trace_id"] != TRACE_ID


def test_error_calls_are_error_level(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    tracer = make_tracer(receiver.url)

    tracer.record(make_record(status="error", error="upstream timeout after 30s", output=None, completion_tokens=0))
    assert tracer.flush(10)

    [span] = receiver.wait_for(lambda s: s["name"] == "chat")
    assert span["attributes"]["langfuse.observation.level"] == "ERROR"
    assert span["attributes"]["langfuse.observation.status_message"] == "upstream timeout after 30s"
    assert span["status_code"] == 2  # STATUS_CODE_ERROR
    assert "langfuse.observation.output" not in span["attributes"]


def test_large_input_and_output_are_truncated(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    tracer = make_tracer(receiver.url)
    huge = "x" * 200_000

    tracer.record(make_record(input=[{"role": "user", "content": huge}], output=huge))
    assert tracer.flush(10)

    [span] = receiver.wait_for(lambda s: s["name"] == "chat")
    for attr in ("langfuse.observation.input", "langfuse.observation.output"):
        text = span["attributes"][attr]
        assert 16_000 <= len(text) < 16_100
        assert text.endswith("chars]") and "truncated" in text


def test_sample_rate_zero_exports_nothing_the_callers_sampled_trace_still_wins(
    receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]
) -> None:
    tracer = make_tracer(receiver.url, sample_rate=0.0)

    for i in range(5):
        tracer.record(make_record(request_id=f"root-{i}"))
    tracer.record(make_record(request_id="unsampled-parent", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00"))
    tracer.record(make_record(request_id="sampled-parent", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01"))
    assert tracer.flush(10)

    receiver.wait_for(lambda s: s["attributes"].get("langfuse.observation.metadata.request_id") == '"sampled-parent"')
    assert [meta(s, "request_id") for s in receiver.spans] == ["sampled-parent"]
    assert tracer.stats.sampled_out == 6


@pytest.mark.parametrize(
    "settings",
    [
        LangfuseSettings(enabled=False, public_key=PK, secret_key=SecretStr(SK)),
        LangfuseSettings(public_key=None, secret_key=None),
    ],
    ids=["disabled", "no-keys"],
)
def test_inactive_settings_make_a_no_op_tracer(receiver: OtlpReceiver, settings: LangfuseSettings) -> None:
    settings = settings.model_copy(update={"host": receiver.url})
    threads_before = {t.name for t in threading.enumerate()}

    tracer = Tracer(settings)
    tracer.record(make_record())

    assert tracer.enabled is False
    assert tracer.flush(1) is True
    tracer.shutdown()
    assert "gateway-tracing" not in {t.name for t in threading.enumerate()} - threads_before
    assert tracer.stats.recorded == 0
    assert receiver.requests == []
    assert get_langfuse(settings) is None


def test_langfuse_returning_500_never_fails_a_call(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    tracer = make_tracer(receiver.url)
    receiver.mode = "fail"

    for i in range(20):
        tracer.record(make_record(request_id=f"failing-{i}"))  # returns, does not raise
    tracer.flush(10)

    assert receiver.trace_posts()  # the exporter tried
    assert receiver.spans == []
    assert tracer.stats.failed_spans == 20
    assert tracer.stats.errors == 0

    # Langfuse is back: later records arrive.
    receiver.mode = "ok"
    tracer.record(make_record(request_id="after"))
    assert tracer.flush(10)
    receiver.wait_for(lambda s: s["attributes"].get("langfuse.observation.metadata.request_id") == '"after"')
    assert tracer.stats.exported_spans >= 1


def test_langfuse_down_never_fails_a_call(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    tracer = make_tracer(receiver.url, export_timeout_s=1.0)
    receiver.stop()  # connection refused from now on

    for i in range(50):
        tracer.record(make_record(request_id=f"down-{i}"))
    tracer.flush(10)

    assert tracer.pending == 0
    assert tracer.stats.failed_spans == 50
    assert tracer.stats.exported_spans == 0


class _Blocker:
    """An input whose serialization (in the worker thread) waits until released: a stalled worker."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __str__(self) -> str:
        self.started.set()
        self.release.wait(30)
        return "blocked input"


def test_full_queue_drops_and_counts_then_recovers(receiver: OtlpReceiver, make_tracer: Callable[..., Tracer]) -> None:
    drops: list[int] = []
    tracer = make_tracer(receiver.url, max_queue_size=5, on_drop=lambda: drops.append(1))
    blocker = _Blocker()
    tracer.record(make_record(request_id="blocker", input={"payload": blocker}))
    assert blocker.started.wait(10)  # the worker is stuck on it; the queue is empty

    for i in range(8):
        tracer.record(make_record(request_id=f"queued-{i}"))

    assert tracer.pending == 5
    assert tracer.dropped == 3
    assert len(drops) == 3

    blocker.release.set()
    assert tracer.flush(10)
    spans = receiver.wait_for(lambda s: s["name"] == "chat", count=6)
    assert sorted(meta(s, "request_id") for s in spans) == ["blocker"] + [f"queued-{i}" for i in range(5)]
    [blocked] = [s for s in spans if meta(s, "request_id") == "blocker"]
    assert json.loads(blocked["attributes"]["langfuse.observation.input"]) == {"payload": "blocked input"}


def test_two_tracers_with_one_public_key_export_to_their_own_hosts(make_tracer: Callable[..., Tracer]) -> None:
    global_provider = otel_trace.get_tracer_provider()
    with OtlpReceiver(PK, SK) as first, OtlpReceiver(PK, SK) as second:
        one, two = make_tracer(first.url), make_tracer(second.url)

        one.record(make_record(request_id="to-first"))
        two.record(make_record(request_id="to-second"))
        assert one.flush(10) and two.flush(10)

        assert [meta(s, "request_id") for s in first.wait_for(lambda s: True)] == ["to-first"]
        assert [meta(s, "request_id") for s in second.wait_for(lambda s: True)] == ["to-second"]
    assert otel_trace.get_tracer_provider() is global_provider  # nothing registered globally


def test_get_langfuse_gives_a_client_bound_to_the_configured_host() -> None:
    global_provider = otel_trace.get_tracer_provider()
    with OtlpReceiver(PK, SK) as first, OtlpReceiver(PK, SK) as second:
        settings_one = LangfuseSettings(host=first.url, public_key=PK, secret_key=SecretStr(SK))
        settings_two = LangfuseSettings(host=second.url, public_key=PK, secret_key=SecretStr(SK))

        client = get_langfuse(settings_one)
        assert client is not None and get_langfuse(settings_one) is client
        client.start_observation(name="orchestrator-step", as_type="span").end()
        client.flush()
        [span] = first.wait_for(lambda s: s["name"] == "orchestrator-step")
        assert span["attributes"]["langfuse.observation.type"] == "span"

        # Langfuse keeps one resource manager per public key: another host must not reuse the first's exporter.
        other = get_langfuse(settings_two)
        assert other is not None and other is not client
        other.start_observation(name="second-host", as_type="span").end()
        other.flush()
        second.wait_for(lambda s: s["name"] == "second-host")
        assert [s["name"] for s in first.spans] == ["orchestrator-step"]
        other.shutdown()
    assert otel_trace.get_tracer_provider() is global_provider
