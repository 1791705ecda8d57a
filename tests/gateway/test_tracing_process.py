"""The out-of-process tracer: spans from the child reach Langfuse; a dead child costs drops, not errors."""

from __future__ import annotations

import time

from pydantic import SecretStr

from core.config import LangfuseSettings
from gateway.tracing import GenerationRecord
from gateway.tracing_process import ProcessTracer
from gateway.wire import LazyCompletionText
from tests.otlp_receiver import OtlpReceiver


def _record(name: str = "chat") -> GenerationRecord:
    now = time.time_ns()
    body = b'{"choices": [{"message": {"role": "assistant", "content": "Net sales were 12.50 EUR."}}]}'
    return GenerationRecord(
        name=name,
        model="copilot-offline",
        start_ns=now - 1_000_000,
        end_ns=now,
        input=[{"role": "user", "content": "sales?"}],
        output=LazyCompletionText(body),
        prompt_tokens=3,
        completion_tokens=7,
        tenant_id="t-1",
        merchant_id="m-1",
    )


def test_records_are_exported_by_the_child_process() -> None:
    with OtlpReceiver(public_key="pk-p", secret_key="sk-p") as receiver:
        tracer = ProcessTracer(LangfuseSettings(host=receiver.url, public_key="pk-p", secret_key=SecretStr("sk-p")))
        try:
            assert tracer.enabled
            for _ in range(3):
                tracer.record(_record())
            assert tracer.flush(10)
            spans = receiver.wait_for(lambda s: s["name"] == "chat", count=3)
        finally:
            tracer.shutdown()
    attrs = spans[0]["attributes"]
    assert attrs["langfuse.observation.type"] == "generation"
    assert "Net sales were 12.50 EUR." in attrs["langfuse.observation.output"]  # the lazy text, rendered in the child


def test_inactive_settings_start_nothing() -> None:
    tracer = ProcessTracer(LangfuseSettings(enabled=False))
    tracer.record(_record())
    assert not tracer.enabled and tracer.pending == 0
    tracer.shutdown()


def test_a_dead_child_means_drops_not_errors() -> None:
    with OtlpReceiver() as receiver:
        tracer = ProcessTracer(
            LangfuseSettings(host=receiver.url, public_key="pk-test", secret_key=SecretStr("sk-test")),
            max_queue_size=5,
        )
        tracer._process.kill()
        tracer._process.join(10)
        for _ in range(50):
            tracer.record(_record())  # never raises
        deadline = time.monotonic() + 10
        while tracer.dropped < 45 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracer.dropped >= 45  # at most the queue bound was held, the rest dropped
        tracer.shutdown(2)
