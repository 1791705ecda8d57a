"""The local upstream behaves as the gateway tests and the benchmark rely on."""

from __future__ import annotations

import base64
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.upstream import UpstreamServer, embedding_vector, prompt_tokens, reply_chunks

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How were sales this week?"}]


@pytest.fixture(scope="module")
def server() -> Iterator[UpstreamServer]:
    with UpstreamServer(chunks=4) as up:
        yield up


@pytest.fixture
def up(server: UpstreamServer) -> Iterator[UpstreamServer]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(up: UpstreamServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.url, timeout=5) as http:
        yield http


def chat(client: httpx.Client, model: str = "m", **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra})


def sse_events(text: str) -> list[Any]:
    """Decoded ``data:`` payloads of an SSE body; ``[DONE]`` stays a string."""
    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def test_chat_completion_has_deterministic_reply_and_usage(client: httpx.Client) -> None:
    first = chat(client).json()
    second = chat(client).json()

    assert first["object"] == "chat.completion" and first["model"] == "m"
    assert first["choices"][0]["message"]["content"] == "".join(reply_chunks(MESSAGES, 4))
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["choices"][0]["finish_reason"] == "stop"
    assert first["usage"] == {
        "prompt_tokens": prompt_tokens(MESSAGES),
        "completion_tokens": 4,
        "total_tokens": prompt_tokens(MESSAGES) + 4,
    }
    assert first["id"] != second["id"]


def test_prompt_tokens_grow_with_input(client: httpx.Client) -> None:
    short = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    long = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "word " * 400}]}
    )

    assert long.json()["usage"]["prompt_tokens"] - short.json()["usage"]["prompt_tokens"] >= 490


def test_max_tokens_caps_the_reply(client: httpx.Client) -> None:
    body = chat(client, max_tokens=2).json()

    assert body["usage"]["completion_tokens"] == 2
    assert body["choices"][0]["finish_reason"] == "length"


def test_stream_sends_chunks_usage_and_done(client: httpx.Client) -> None:
    response = chat(client, stream=True, stream_options={"include_usage": True})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    content = [e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(content) == 4
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(e["choices"][0]["delta"]["content"] for e in content) == "".join(reply_chunks(MESSAGES, 4))
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_stream_without_include_usage_has_no_usage_chunk(client: httpx.Client) -> None:
    events = sse_events(chat(client, stream=True).text)

    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


def test_chunk_count_is_set_per_model(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("long", chunks=20)

    long_events = sse_events(chat(client, "long", stream=True).text)
    other = chat(client, "other").json()

    assert len([e for e in long_events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")]) == 20
    assert other["usage"]["completion_tokens"] == 4


def test_embeddings_are_deterministic_unit_vectors(client: httpx.Client) -> None:
    body = client.post("/v1/embeddings", json={"model": "e", "input": ["a", "b", "a"], "dimensions": 8}).json()

    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == pytest.approx(embedding_vector("a", 8))
    assert sum(v * v for v in vectors[1]) == pytest.approx(1.0)
    assert body["usage"]["prompt_tokens"] == 3


def test_embeddings_base64_decode_to_the_float_vector(client: httpx.Client) -> None:
    body = client.post("/v1/embeddings", json={"model": "e", "input": "hello", "encoding_format": "base64"}).json()

    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(embedding_vector("hello"), abs=1e-6)


def test_models_lists_configured_and_behaviour_models(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("special", latency_s=0.0)

    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]

    assert {"bench-model", "special"} <= set(ids)


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (500, "server_error"), (503, None)])
def test_status_errors_have_openai_shape(up: UpstreamServer, client: httpx.Client, status: int, kind: str) -> None:
    up.behave("bad", status=status, error_message="nope")

    response = chat(client, "bad")

    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] == "nope" and set(error) == {"message", "type", "param", "code"}
    if kind:
        assert error["type"] == kind
    assert chat(client, "good").status_code == 200


def test_429_carries_retry_after(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("limited", status=429, retry_after=2.5)

    response = chat(client, "limited")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2.5"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_fail_next_then_succeed_and_count_every_attempt(up: UpstreamServer, client: httpx.Client) -> None:
    up.fail_next("flaky", 2, status=503, retry_after=1)

    statuses = [chat(client, "flaky").status_code for _ in range(4)]

    assert statuses == [503, 503, 200, 200]
    assert up.count("flaky") == 4
    assert chat(client, "other").status_code == 200


def test_latency_applies_before_response(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("slow", latency_s=0.3)

    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"model": "slow", "messages": MESSAGES}, timeout=0.05)
    assert chat(client, "slow").status_code == 200


def test_latency_between_stream_chunks(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("slow-stream", chunk_latency_s=0.2, chunks=3)
    arrivals: list[float] = []

    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "slow-stream", "messages": MESSAGES, "stream": True}
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content"' in line:
                arrivals.append(time.monotonic())

    # Three chunks two sleeps apart: the last arrives well after the first (not a speed assert).
    assert len(arrivals) == 3
    assert arrivals[-1] - arrivals[0] >= 0.3


def test_hang_never_answers_and_other_models_still_work(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("stuck", hang=True)

    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json={"model": "stuck", "messages": MESSAGES}, timeout=0.3)
    assert chat(client, "fine").status_code == 200
    assert up.count("stuck") == 1


def test_reset_mid_stream_after_k_chunks(up: UpstreamServer, client: httpx.Client) -> None:
    up.behave("broken", reset_after_chunks=2, chunks=6)
    received: list[str] = []

    def read_stream() -> None:
        body = {"model": "broken", "messages": MESSAGES, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            received.extend(line for line in response.iter_lines() if line.startswith("data: "))

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        read_stream()

    assert len(received) == 2
    assert chat(client, "fine").status_code == 200


def test_azure_path_requires_api_version_and_key(up: UpstreamServer, client: httpx.Client) -> None:
    path = "/openai/deployments/my-deploy/chat/completions"
    body = {"messages": MESSAGES}

    ok = client.post(path, params={"api-version": "2024-10-21"}, headers={"api-key": "k"}, json=body)
    no_key = client.post(path, params={"api-version": "2024-10-21"}, json=body)
    no_version = client.post(path, headers={"api-key": "k"}, json=body)

    assert ok.status_code == 200 and ok.json()["model"] == "my-deploy"
    assert no_key.status_code == 401 and no_version.status_code == 400
    assert up.count("my-deploy") == 1
    assert up.last("my-deploy").query["api-version"] == "2024-10-21"
    assert up.last("my-deploy").headers["api-key"] == "k"


def test_azure_behaviour_is_keyed_by_deployment(up: UpstreamServer, client: httpx.Client) -> None:
    up.fail_next("east", 1, status=500)
    path = "/openai/deployments/east/embeddings"

    first = client.post(path, params={"api-version": "v"}, headers={"api-key": "k"}, json={"input": "x"})
    second = client.post(path, params={"api-version": "v"}, headers={"api-key": "k"}, json={"input": "x"})

    assert (first.status_code, second.status_code) == (500, 200)


def test_request_log_keeps_bodies_headers_and_resets(up: UpstreamServer, client: httpx.Client) -> None:
    chat(client, "logged", temperature=0.2)
    client.post(
        "/v1/chat/completions",
        json={"model": "logged", "messages": MESSAGES},
        headers={"authorization": "Bearer sk-test", "x-trace": "t1"},
    )

    records = up.requests("logged")
    assert [r.body["model"] for r in records] == ["logged", "logged"]
    assert records[0].body["temperature"] == 0.2
    assert up.last("logged").headers["x-trace"] == "t1"
    assert up.last().path == "/v1/chat/completions"
    up.reset()
    assert up.count("logged") == 0 and up.requests() == []


def test_api_key_is_enforced_when_configured() -> None:
    with UpstreamServer(api_key="sk-up") as up, httpx.Client(base_url=up.url) as http:
        denied = http.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
        allowed = http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": "Bearer sk-up"},
        )

    assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200


def test_bad_requests_are_openai_errors(client: httpx.Client) -> None:
    not_json = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    no_model = client.post("/v1/chat/completions", json={"messages": MESSAGES})
    unknown = client.get("/v1/nothing")

    assert not_json.status_code == 400 and no_model.status_code == 400 and unknown.status_code == 404
    assert "error" in not_json.json() and "error" in unknown.json()


def test_http_control_sets_behaviour_and_reports_stats(client: httpx.Client) -> None:
    client.post("/_upstream/behaviour", json={"model": "ctl", "status": 503})
    client.post("/_upstream/fail_next", json={"model": "ctl2", "n": 1, "status": 429})

    assert chat(client, "ctl").status_code == 503
    assert [chat(client, "ctl2").status_code for _ in range(2)] == [429, 200]
    assert client.get("/_upstream/stats").json()["counts"] == {"ctl": 1, "ctl2": 2}
    client.post("/_upstream/reset")
    assert chat(client, "ctl").status_code == 200


def test_stop_drops_a_hanging_request() -> None:
    up = UpstreamServer().start()
    up.behave(hang=True)
    with httpx.Client(base_url=up.url, timeout=5) as http:
        import threading

        errors: list[BaseException] = []

        def call() -> None:
            try:
                chat(http)
            except httpx.HTTPError as exc:
                errors.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 3
        while up.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        up.stop()
        caller.join(5)

    assert not caller.is_alive()
    assert errors and not isinstance(errors[0], httpx.TimeoutException)


def test_runs_as_a_separate_process(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.upstream", "--port", str(port), "--chunks", "3"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            events = sse_events(chat(http, stream=True, stream_options={"include_usage": True}).text)
            stats = http.get("/_upstream/stats").json()
        assert events[-2]["usage"]["completion_tokens"] == 3
        assert stats["counts"] == {"m": 1}
    finally:
        process.terminate()
        process.wait(10)
