"""Gateway benchmark: a local upstream alone vs through our gateway vs through the LiteLLM proxy.

One run measures, loopback only, for each scenario (non-stream chat, stream
chat with ``--chunks`` content chunks) and each connection count (default 1,
16, 64), three targets against the same zero-work upstream
(``tests/gateway/upstream.py`` in its own process):

- ``upstream``: the upstream alone (the baseline of every ratio);
- ``gateway``: ``copilot gateway serve --workers 1`` with auth, rate limits,
  metering (embedded PostgreSQL + Redis started here) and Langfuse tracing on,
  exported to a local OTLP sink that answers 200;
- ``litellm``: the LiteLLM proxy (``litellm[proxy]==1.106.2``, one worker, a
  master key, no database) in a bench-only venv created on first use under
  ``bench/.venvs/litellm-proxy``.

A separate load-generator process (aiohttp, one keep-alive connection per
concurrent worker) runs each cell for ``--warmup`` + ``--duration`` seconds;
each request has a distinct prompt (no cache hit). Reported per cell: req/s,
p50/p99 latency (streams: time to last byte), added p50 vs the upstream alone
in the same run, and CPU time per request of the target's process tree (from
/proc, utime+stime). Prints a table, the gateway/LiteLLM ratios and the goal
checks, and writes JSON to ``bench/results/gateway-<timestamp>.json``.

    uv run python bench/gateway.py                          # ~4 min
    uv run python bench/gateway.py --duration 3 --connections 1,16
    uv run python bench/gateway.py --skip-litellm

Goal (issue 4), one worker process each: added p50 latency at 1 connection
<= 1 ms, and >= 10x the LiteLLM proxy's req/s at 16 and 64 connections,
streaming included. A target that fails to start is reported as failed; the
others are still measured. Every process started here is stopped at the end
(also on Ctrl-C or an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LITELLM_VERSION = "1.106.2"  # exact pin: 1.82.7/1.82.8 were malicious; >= 1.106.3 does not resolve here
LITELLM_VENV = ROOT / "bench" / ".venvs" / "litellm-proxy"
MODEL = "bench-model"
UPSTREAM_KEY = "sk-upstream-bench"
LITELLM_MASTER_KEY = "sk-litellm-bench"
PROMPT = "How were my sales last week compared with the week before, and which product sold best? Request "
GOAL_ADDED_P50_MS = 1.0
GOAL_RATIO = 10.0


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Processes:
    """Every child process of the run, each in its own session, stopped by id at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
        if process.poll() is not None:
            return
        # Each child leads its own process group: this reaches its workers too, and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout_s)

    def stop_all(self) -> None:
        for _, process in reversed(self.started):
            self.stop(process)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_ready(
    url: str, process: subprocess.Popen[bytes], timeout_s: float, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with code {process.returncode} before it was ready")
        with contextlib.suppress(OSError):
            status, _ = _get(url, headers)
            if status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"not ready at {url} after {timeout_s:.0f}s")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def tree_cpu_seconds(root_pid: int) -> float:
    """utime+stime of a process and its live descendants, plus what its reaped children used."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    tree = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    ticks = 0
    for pid in tree:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # fields[11..14] = utime, stime, cutime, cstime (stat fields 14-17).
        ticks += int(fields[11]) + int(fields[12])
        if pid == root_pid:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


@dataclass
class Target:
    """One thing the load generator calls."""

    name: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.error is None and self.process is not None and self.process.poll() is None


def start_upstream(procs: Processes, chunks: int) -> Target:
    port = _free_port()
    process = procs.start(
        "upstream",
        [sys.executable, "-m", "tests.gateway.upstream", "--port", str(port), "--chunks", str(chunks)],
    )
    _wait_ready(f"http://127.0.0.1:{port}/v1/models", process, 20)
    target = Target("upstream", f"http://127.0.0.1:{port}", {"authorization": f"Bearer {UPSTREAM_KEY}"}, process)
    prime(target)
    return target


def start_sink(procs: Processes) -> tuple[str, subprocess.Popen[bytes]]:
    port = _free_port()
    process = procs.start("otlp-sink", [sys.executable, str(Path(__file__).resolve()), "_sink", str(port)])
    _wait_ready(f"http://127.0.0.1:{port}/stats", process, 20)
    return f"http://127.0.0.1:{port}", process


def _copilot() -> str:
    script = Path(sys.executable).parent / "copilot"
    return str(script) if script.exists() else "copilot"


def start_gateway(procs: Processes, workdir: Path, upstream: Target, sink_url: str, embedded: list[Any]) -> Target:
    """Embedded Postgres + Redis, a migrated database, a routing file, a key, then the gateway.

    The embedded servers are appended to ``embedded`` before they start, so the caller stops them
    even when this is interrupted half-way.
    """
    target = Target("gateway")
    try:
        from core.config import DatabaseSettings
        from core.db.admin import create_database
        from core.db.migrate import migrate
        from core.embedded import EmbeddedPostgres, EmbeddedRedis

        postgres = EmbeddedPostgres(workdir / "data", database="postgres")
        redis_server = EmbeddedRedis(workdir / "data")
        embedded.extend([redis_server, postgres])
        server_url = postgres.start()
        database_url = create_database(server_url, "bench_gateway")
        migrate(database_url, DatabaseSettings())
        redis_url = redis_server.start()

        routing = workdir / "routing.yaml"
        routing.write_text(
            f"""router:
  num_retries: 2
  timeout_s: 30
models:
  - alias: {MODEL}
    mode: chat
    deployments:
      - name: bench-upstream
        provider: openai
        model: {MODEL}
        api_base: {upstream.url}/v1
        api_key: os.environ/BENCH_UPSTREAM_KEY
        input_cost_per_token: 1.5e-7
        output_cost_per_token: 6.0e-7
"""
        )
        env = {
            **os.environ,
            "COPILOT_DATABASE__URL": database_url,
            "COPILOT_REDIS__URL": redis_url,
            "COPILOT_EMBEDDED__DATA_DIR": str(workdir / "data"),
            "COPILOT_GATEWAY__KEY_PEPPER": "bench-pepper-not-a-secret",
            "COPILOT_GATEWAY__ADMIN_TOKEN": "bench-admin-token",
            "COPILOT_GATEWAY__USAGE_SPOOL_DIR": str(workdir / "usage-spool"),
            "COPILOT_LANGFUSE__ENABLED": "true",
            "COPILOT_LANGFUSE__HOST": sink_url,
            "COPILOT_LANGFUSE__PUBLIC_KEY": "pk-lf-bench",
            "COPILOT_LANGFUSE__SECRET_KEY": "sk-lf-bench",
            "COPILOT_LOG_LEVEL": "WARNING",
            "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        created = subprocess.run(
            [_copilot(), "keys", "create", "--name", "bench", "--tenant", "bench",
             "--rpm", "100000000", "--tpm", "1000000000", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"copilot keys create failed: {(created.stderr or created.stdout).strip()[-800:]}")
        key = _json_with(created.stdout, "key")["key"]
        port = _free_port()
        process = procs.start(
            "gateway",
            [_copilot(), "gateway", "serve", "--config", str(routing),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env,
        )  # fmt: skip
        target.process = process
        target.url = f"http://127.0.0.1:{port}"
        target.headers = {"authorization": f"Bearer {key}", "x-copilot-merchant": "bench-merchant"}
        _wait_ready(f"{target.url}/health", process, 90)
        _wait_ready(f"{target.url}/v1/models", process, 30, target.headers)
        prime(target)
    except Exception as exc:
        tail = procs.log_tail("gateway")
        target.error = f"{type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else "")
    return target


def prime(target: Target, requests: int = 5) -> None:
    """A few chat and stream calls before measuring: first calls pay lazy imports and connection setup."""
    for i in range(requests):
        for stream in (False, True):
            body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT}prime-{i}"}]}
            if stream:
                body |= {"stream": True, "stream_options": {"include_usage": True}}
            request = urllib.request.Request(
                f"{target.url}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={**target.headers, "content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()


def _json_with(text: str, key: str) -> dict[str, Any]:
    """The JSON object holding ``key`` in a command's output (the whole output, or one of its lines)."""
    with contextlib.suppress(json.JSONDecodeError):
        whole = json.loads(text)
        if isinstance(whole, dict) and key in whole:
            return whole
    for line in reversed(text.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and key in parsed:
                return parsed
    raise RuntimeError(f"no JSON with {key!r} in output: {text.strip()[-300:]}")


def ensure_litellm_venv() -> Path:
    """The bench-only venv with the pinned LiteLLM proxy, created on first use."""
    python = LITELLM_VENV / "bin" / "python"
    marker = list((LITELLM_VENV / "lib").glob(f"python3*/site-packages/litellm-{LITELLM_VERSION}.dist-info"))
    if python.exists() and marker and (LITELLM_VENV / "bin" / "litellm").exists():
        return LITELLM_VENV / "bin" / "litellm"
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to create the LiteLLM proxy venv (pip install uv)")
    print(f"creating {LITELLM_VENV} with litellm[proxy]=={LITELLM_VERSION} (first run only)...", flush=True)
    if not python.exists():
        subprocess.run([uv, "venv", "--python", "3.11", str(LITELLM_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "--python", str(python), f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    return LITELLM_VENV / "bin" / "litellm"


def start_litellm(procs: Processes, workdir: Path, upstream: Target) -> Target:
    target = Target("litellm")
    try:
        executable = ensure_litellm_venv()
        config = workdir / "litellm.yaml"
        config.write_text(
            f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream.url}/v1
      api_key: os.environ/BENCH_UPSTREAM_KEY
litellm_settings:
  num_retries: 2
  request_timeout: 30
  set_verbose: false
  telemetry: false
general_settings:
  master_key: {LITELLM_MASTER_KEY}
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DATABASE_URL"))}
        env.update(
            {
                "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                "PATH": f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}",
            }
        )
        port = _free_port()
        process = procs.start(
            "litellm",
            [
                str(executable),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env=env,
        )
        target.process = process
        target.url = f"http://127.0.0.1:{port}"
        target.headers = {"authorization": f"Bearer {LITELLM_MASTER_KEY}"}
        _wait_ready(f"{target.url}/v1/models", process, 180, target.headers)
        prime(target)
    except Exception as exc:
        tail = procs.log_tail("litellm")
        target.error = f"{type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else "")
    return target


# ---------------------------------------------------------------------------
# Load generator (its own process)
# ---------------------------------------------------------------------------


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url = spec["url"] + "/v1/chat/completions"
    stream = spec["stream"]
    conns = spec["connections"]
    headers = {**spec["headers"], "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=conns, limit_per_host=conns, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=30)
    latencies: list[float] = []
    first_bytes: list[float] = []
    events: list[int] = []
    errors: dict[str, int] = {}
    completed = 0
    in_window = 0
    started = time.perf_counter()
    measure_from = started + spec["warmup"]
    end = measure_from + spec["duration"]
    prefix = '{"model":"' + MODEL + '","max_tokens":256,"messages":[{"role":"user","content":"' + PROMPT
    suffix = '"}]' + (',"stream":true,"stream_options":{"include_usage":true}}' if stream else "}")

    async def worker(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal completed, in_window
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            n += 1
            body = f"{prefix}{index}-{n}{suffix}".encode()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    status = response.status
                    if stream and status == 200:
                        first = 0.0
                        buffer = bytearray()
                        async for piece in response.content.iter_any():
                            if not first:
                                first = time.perf_counter()
                            buffer += piece
                        frames = buffer.count(b"data: ")
                        ok = buffer.rstrip().endswith(b"data: [DONE]")
                    else:
                        await response.read()
                        ok = status == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            completed += 1
            if not ok:
                reason = str(status) if status != 200 else "truncated-stream"
                errors[reason] = errors.get(reason, 0) + 1
                continue
            # Completions inside the window count (a slow target's requests may start in the warm-up).
            if measure_from <= t1 <= end:
                in_window += 1
                latencies.append(t1 - t0)
                if stream:
                    first_bytes.append(first - t0)
                    events.append(frames)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, i) for i in range(conns)))
    latencies.sort()
    first_bytes.sort()
    result: dict[str, Any] = {
        "requests": in_window,
        "completed_total": completed,
        "errors": errors,
        "rps": round(in_window / spec["duration"], 1),
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 3),
        "p90_ms": round(_percentile(latencies, 0.9) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(sum(latencies) / len(latencies) * 1000, 3) if latencies else float("nan"),
    }
    if stream:
        result["ttfb_p50_ms"] = round(_percentile(first_bytes, 0.5) * 1000, 3)
        result["events_per_stream"] = round(sum(events) / len(events), 1) if events else 0
    return result


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(_load(spec))
    else:
        result = uvloop.run(_load(spec))
    print(json.dumps(result), flush=True)


def run_cell(target: Target, *, stream: bool, connections: int, duration: float, warmup: float) -> dict[str, Any]:
    """Load one target for one scenario in a fresh load-generator process; add its CPU per request."""
    assert target.process is not None
    spec = {
        "url": target.url,
        "headers": target.headers,
        "stream": stream,
        "connections": connections,
        "duration": duration,
        "warmup": warmup,
    }
    cpu_before = tree_cpu_seconds(target.process.pid)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)],
        cwd=ROOT, capture_output=True, text=True, timeout=duration + warmup + 60, check=False,
    )  # fmt: skip
    cpu = tree_cpu_seconds(target.process.pid) - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_s"] = round(cpu, 3)
    total = result["completed_total"]
    result["cpu_ms_per_req"] = round(cpu * 1000 / total, 3) if total else None
    return result


# ---------------------------------------------------------------------------
# OTLP sink (its own process): accepts every request with 200
# ---------------------------------------------------------------------------


def sink_main(port: int) -> None:
    import httptools

    counts = {"requests": 0, "bytes": 0}

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            counts["bytes"] += len(body)

        def on_message_complete(self) -> None:
            if self.url.startswith(b"/stats"):
                body = json.dumps(counts).encode()
            else:
                counts["requests"] += 1
                body = b"{}"
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return format(value, spec)


def report(rows: list[dict[str, Any]], targets: dict[str, Target], connections: list[int]) -> dict[str, Any]:
    by_key = {(r["target"], r["scenario"], r["connections"]): r for r in rows}
    for row in rows:
        base = by_key.get(("upstream", row["scenario"], row["connections"]))
        if row["target"] != "upstream" and base and "p50_ms" in row and "p50_ms" in base:
            row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
            row["added_p99_ms"] = round(row["p99_ms"] - base["p99_ms"], 3)

    header = (
        f"{'target':<9} {'scenario':<7} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'added p50':>9} {'CPU ms/req':>10} {'errors':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.get("failed"):
            print(f"{row['target']:<9} {row['scenario']:<7} {row['connections']:>5} FAILED: {row['failed'][:70]}")
            continue
        errors = sum(row["errors"].values())
        print(
            f"{row['target']:<9} {row['scenario']:<7} {row['connections']:>5} {_fmt(row['rps'], ',.1f'):>9} "
            f"{_fmt(row['p50_ms'], '.2f'):>8} {_fmt(row['p99_ms'], '.2f'):>8} "
            f"{_fmt(row.get('added_p50_ms'), '+.2f'):>9} {_fmt(row['cpu_ms_per_req'], '.3f'):>10} {errors:>7}"
        )

    ratios = []
    checks = []
    for scenario in ("chat", "stream"):
        for conns in connections:
            ours = by_key.get(("gateway", scenario, conns), {})
            theirs = by_key.get(("litellm", scenario, conns), {})
            ratio = None
            if ours.get("rps") and theirs.get("rps"):
                ratio = round(ours["rps"] / theirs["rps"], 2)
            ratios.append({"scenario": scenario, "connections": conns, "gateway_over_litellm_rps": ratio})
            if conns == 1:
                added = ours.get("added_p50_ms")
                checks.append(
                    {
                        "goal": f"{scenario}: added p50 at 1 connection <= {GOAL_ADDED_P50_MS} ms",
                        "value": added,
                        "pass": added is not None and added <= GOAL_ADDED_P50_MS,
                    }
                )
            if conns in (16, 64):
                checks.append(
                    {
                        "goal": f"{scenario}: gateway req/s >= {GOAL_RATIO:g}x LiteLLM at {conns} connections",
                        "value": ratio,
                        "pass": None if "litellm" not in targets else (ratio is not None and ratio >= GOAL_RATIO),
                    }
                )
    print("\ngateway / LiteLLM req/s:")
    for r in ratios:
        print(f"  {r['scenario']:<7} {r['connections']:>3} conns: {_fmt(r['gateway_over_litellm_rps'], '.2f')}x")
    print("\ngoals:")
    for check in checks:
        verdict = "PASS" if check["pass"] is True else "FAIL" if check["pass"] is False else "n/a "
        print(f"  {verdict}  {check['goal']} (measured: {check['value']})")
    for name, target in targets.items():
        if target.error:
            print(f"\n{name} failed to start:\n{target.error}")
    return {"ratios": ratios, "goals": checks}


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "_sink":
        sink_main(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    parser.add_argument("--connections", default="1,16,64", help="comma-separated concurrent connections")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per upstream reply")
    parser.add_argument("--scenarios", default="chat,stream", help="chat, stream or both")
    parser.add_argument("--skip-litellm", action="store_true", help="do not start the LiteLLM proxy")
    parser.add_argument("--skip-gateway", action="store_true", help="do not start our gateway")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/gateway-<timestamp>.json)")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]

    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bgw-", dir="/tmp"))
    procs = Processes(workdir)
    targets: dict[str, Target] = {}
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    sink: tuple[str, subprocess.Popen[bytes]] | None = None
    embedded: list[Any] = []
    try:
        upstream = start_upstream(procs, args.chunks)
        targets["upstream"] = upstream
        if not args.skip_gateway:
            sink = start_sink(procs)
            print("starting the gateway (embedded Postgres + Redis)...", flush=True)
            targets["gateway"] = start_gateway(procs, workdir, upstream, sink[0], embedded)
        if not args.skip_litellm:
            print(f"starting the LiteLLM proxy {LITELLM_VERSION}...", flush=True)
            targets["litellm"] = start_litellm(procs, workdir, upstream)
        for name, target in targets.items():
            print(f"  {name}: {'FAILED' if target.error else target.url}", flush=True)

        for scenario in scenarios:
            for conns in connections:
                # Targets interleaved per cell, so the baseline is measured next to what it is compared with.
                for name, target in targets.items():
                    row: dict[str, Any] = {"target": name, "scenario": scenario, "connections": conns}
                    if not target.alive:
                        row["failed"] = (target.error or "process exited").splitlines()[0]
                    else:
                        upstream_before = _upstream_total(upstream)
                        try:
                            row.update(
                                run_cell(
                                    target,
                                    stream=scenario == "stream",
                                    connections=conns,
                                    duration=args.duration,
                                    warmup=args.warmup,
                                )
                            )
                        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                            row["failed"] = str(exc)
                        row["upstream_requests"] = _upstream_total(upstream) - upstream_before
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        if sink is not None:
            with contextlib.suppress(OSError):
                targets.get("gateway", Target("x")).info["otlp_sink"] = json.loads(_get(f"{sink[0]}/stats")[1])
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process", flush=True)
    finally:
        # A second Ctrl-C must not leave servers behind: cleanup runs to the end.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        for server in embedded:  # Redis first, then Postgres; both before their folder goes
            try:
                server.stop()
            except Exception as exc:
                print(f"could not stop {type(server).__name__}: {exc}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    summary = report(rows, targets, connections)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"gateway-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "gateway",
                "started_at": stamp,
                "seconds": round(time.monotonic() - started, 1),
                "settings": {
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                    "connections": connections,
                    "chunks": args.chunks,
                    "scenarios": scenarios,
                    "litellm_version": LITELLM_VERSION if "litellm" in targets else None,
                    "cpus": os.cpu_count(),
                },
                "targets": {name: {"url": t.url, "error": t.error, **t.info} for name, t in targets.items()},
                "results": rows,
                **summary,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


def _upstream_total(upstream: Target) -> int:
    try:
        return int(json.loads(_get(f"{upstream.url}/_upstream/stats")[1])["total"])
    except (OSError, ValueError, KeyError):
        return 0


if __name__ == "__main__":
    main()
