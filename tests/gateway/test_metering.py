"""Usage metering against the real PostgreSQL: batching, idempotence, spooling, replay, export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import shutil
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import Engine, text

from core.errors import ServiceUnavailableError
from gateway.metering import (
    SPOOL_PREFIX,
    UsageEvent,
    UsageExportError,
    UsageRecorder,
    billing_period,
    export_usage,
)

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


async def eventually(condition: Callable[[], bool], attempts: int = 1000) -> None:
    """Poll ``condition`` (bounded: about 20 s); the caller asserts the outcome."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.02)


def closed_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def down_url() -> str:
    return f"postgresql://copilot@127.0.0.1:{closed_port()}/copilot"


@pytest.fixture
def tenant(admin_engine: Engine) -> Iterator[str]:
    """A tenant id unique to the test; its usage rows are deleted afterwards (the recorder commits)."""
    tenant_id = f"mt-{uuid.uuid4().hex[:10]}"
    yield tenant_id
    with admin_engine.begin() as connection:
        connection.execute(text("DELETE FROM usage_records WHERE tenant_id LIKE :t"), {"t": f"{tenant_id}%"})


def event(tenant_id: str, **overrides: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "key_id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "merchant_id": "m-1",
        "endpoint": "chat",
        "model": "gpt-4o-mini",
        "deployment": "openai-main",
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "cost_micros_usd": 36,
        "latency_ms": 412,
        "status": "ok",
    }
    values.update(overrides)
    return UsageEvent(**values)


def rows_of(engine: Engine, tenant_id: str) -> dict[uuid.UUID, dict[str, Any]]:
    with engine.connect() as connection:
        result = connection.execute(
            text("SELECT * FROM usage_records WHERE tenant_id LIKE :t ORDER BY usage_id"), {"t": f"{tenant_id}%"}
        )
        rows = [dict(r._mapping) for r in result]
    by_id = {r["request_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a request_id was stored twice"
    return by_id


def spool_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{SPOOL_PREFIX}*.jsonl"))


def test_recorded_events_are_written_once_with_every_field(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    created = datetime(2026, 11, 3, 14, 5, 6, 789000, tzinfo=UTC)
    events = [event(tenant, cost_micros_usd=i, created_at=created + timedelta(seconds=i)) for i in range(1, 8)]
    failed = event(
        tenant, endpoint="embeddings", status="upstream_error", error="503 from upstream",
        deployment=None, key_id=None, cache_hit=True, stream=True, completion_tokens=0,
    )  # fmt: skip

    async def main() -> tuple[int, int, int]:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, batch_size=3, flush_interval_s=60)
        await recorder.start()
        for e in [*events, failed]:
            recorder.record(e)
        pending = recorder.pending
        written = await recorder.flush()
        again = await recorder.flush()
        await recorder.aclose()
        return pending, written, again

    pending, written, again = run(main)
    assert (pending, written, again) == (8, 8, 0)
    stored = rows_of(admin_engine, tenant)
    assert set(stored) == {e.request_id for e in [*events, failed]}
    for e in [*events, failed]:
        row = stored[e.request_id]
        for name in (
            "key_id", "tenant_id", "merchant_id", "endpoint", "model", "deployment", "prompt_tokens",
            "completion_tokens", "cost_micros_usd", "latency_ms", "status", "cache_hit", "stream", "error",
        ):  # fmt: skip
            assert row[name] == getattr(e, name), name
        assert row["created_at"] == e.created_at
    assert spool_files(tmp_path) == []


def test_awkward_text_survives_the_batch_insert(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    texts = [
        'quote " and \\ backslash',
        "{braces},commas",
        "NULL",
        "",
        " padded ",
        "日本語 ✓",
        "new\nline\ttab",
        "\x00nul",
    ]
    events = [event(tenant, merchant_id=t[:64], error=t, model=t) for t in texts]
    events.append(event(tenant, merchant_id=None, error=None, deployment=None, key_id=None))

    async def main() -> int:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, batch_size=100, flush_interval_s=60)
        await recorder.start()
        for e in events:
            recorder.record(e)
        written = await recorder.flush()
        await recorder.aclose()
        return written

    assert run(main) == len(events)
    stored = rows_of(admin_engine, tenant)
    for e in events:
        row = stored[e.request_id]
        for name in ("merchant_id", "error", "model", "deployment", "key_id"):
            expected = getattr(e, name)
            assert row[name] == (expected.replace("\x00", "") if isinstance(expected, str) else expected), name
    assert spool_files(tmp_path) == []


def test_same_request_id_twice_bills_once(database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path) -> None:
    first = event(tenant, cost_micros_usd=100)
    retry = event(tenant, request_id=first.request_id, cost_micros_usd=999)

    async def main() -> None:
        async with UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=60) as recorder:
            recorder.record(first)
            recorder.record(first)  # twice in one batch
            await recorder.flush()
            recorder.record(retry)  # and again in a later batch
            await recorder.flush()

    run(main)
    stored = rows_of(admin_engine, tenant)
    assert list(stored) == [first.request_id]
    assert stored[first.request_id]["cost_micros_usd"] == 100


def test_background_flusher_writes_without_explicit_flush(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    events = [event(tenant) for _ in range(5)]

    async def main() -> int:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=0.05)
        await recorder.start()
        for e in events:
            recorder.record(e)
        await eventually(lambda: recorder.pending == 0)
        pending = recorder.pending
        # Not closed yet: the rows are there because the background task wrote them.
        assert len(rows_of(admin_engine, tenant)) == 5
        await recorder.aclose()
        return pending

    assert run(main) == 0


def test_aclose_writes_what_is_buffered(database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path) -> None:
    events = [event(tenant) for _ in range(3)]

    async def main() -> None:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=3600)
        await recorder.start()
        for e in events:
            recorder.record(e)
        await recorder.aclose()
        assert recorder.pending == 0

    run(main)
    assert set(rows_of(admin_engine, tenant)) == {e.request_id for e in events}
    assert spool_files(tmp_path) == []


def test_database_down_spools_then_a_new_recorder_replays_without_duplicates(
    database_url: str, down_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    events = [event(tenant, cost_micros_usd=i) for i in range(12)]

    async def while_down() -> dict[str, int]:
        recorder = UsageRecorder(down_url, spool_dir=tmp_path, batch_size=5, flush_interval_s=3600)
        await recorder.start()  # nothing to replay, database unreachable: starts anyway
        for e in events:
            recorder.record(e)
        with pytest.raises(ServiceUnavailableError):
            await recorder.flush()
        assert recorder.pending == 12  # a failed flush keeps everything
        await recorder.aclose()
        assert recorder.pending == 0
        return recorder.stats

    stats = run(while_down)
    assert stats["spooled"] == 12 and stats["written"] == 0
    [spooled] = spool_files(tmp_path)
    lines = spooled.read_text().splitlines()
    assert sorted(json.loads(line)["request_id"] for line in lines) == sorted(str(e.request_id) for e in events)
    assert rows_of(admin_engine, tenant) == {}
    backup = tmp_path / "backup.jsonl.bak"
    shutil.copy(spooled, backup)

    async def replay() -> dict[str, int]:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, batch_size=5, flush_interval_s=3600)
        await recorder.start()
        await recorder.aclose()
        return recorder.stats

    assert run(replay)["replayed"] == 12
    assert spool_files(tmp_path) == []
    stored = rows_of(admin_engine, tenant)
    assert set(stored) == {e.request_id for e in events}
    assert sum(r["cost_micros_usd"] for r in stored.values()) == sum(range(12))

    # The same file replayed again (a crash after commit, before delete) adds nothing.
    shutil.copy(backup, tmp_path / spooled.name)
    assert run(replay)["replayed"] == 12
    assert len(rows_of(admin_engine, tenant)) == 12
    assert spool_files(tmp_path) == []


def test_flusher_spools_during_an_outage_and_keeps_memory_small(down_url: str, tenant: str, tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        recorder = UsageRecorder(down_url, spool_dir=tmp_path, flush_interval_s=0.02, max_backoff_s=0.05)
        await recorder.start()
        for _ in range(20):
            recorder.record(event(tenant))
        await eventually(lambda: recorder.stats["spooled"] >= 20)
        pending, failures = recorder.pending, recorder.stats["write_failures"]
        await recorder.aclose()
        return pending, failures

    pending, failures = run(main)
    assert pending == 0 and failures >= 1
    lines = [line for f in spool_files(tmp_path) for line in f.read_text().splitlines()]
    assert len(lines) == 20


def test_recovery_replays_the_outage_spool_in_the_same_process(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    """Spooled while down, then the database is back: the same recorder writes the spool and deletes it."""
    events = [event(tenant) for _ in range(4)]

    async def main() -> dict[str, int]:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=3600)
        await recorder.start()
        for e in events[:2]:
            recorder.record(e)
        await recorder._spill()  # what a failed tick does while the database is down
        assert len(spool_files(tmp_path)) == 1
        for e in events[2:]:
            recorder.record(e)
        async with recorder._lock:
            await recorder._tick()  # the database answers again
        await recorder.aclose()
        return recorder.stats

    stats = run(main)
    assert stats["spooled"] == 2 and stats["replayed"] == 2 and stats["written"] == 2
    assert set(rows_of(admin_engine, tenant)) == {e.request_id for e in events}
    assert spool_files(tmp_path) == []


def test_a_live_process_spool_file_is_left_alone(
    database_url: str, down_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    mine = event(tenant)

    async def main() -> None:
        live = UsageRecorder(down_url, spool_dir=tmp_path, flush_interval_s=3600)
        live.record(mine)
        await live._spill()  # the file stays open and locked while `live` runs
        other = UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=3600)
        await other.start()
        assert other.stats["replayed"] == 0
        assert len(spool_files(tmp_path)) == 1
        await live.aclose()  # releases the file
        await other._replay_spool()
        await other.aclose()

    run(main)
    assert list(rows_of(admin_engine, tenant)) == [mine.request_id]
    assert spool_files(tmp_path) == []


def test_torn_last_line_is_skipped_and_the_rest_replayed(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    good = [event(tenant) for _ in range(3)]
    torn = event(tenant).to_json()[:40]  # a hard crash in the middle of a write
    (tmp_path / f"{SPOOL_PREFIX}999-crashed.jsonl").write_text("".join(e.to_json() + "\n" for e in good) + torn)

    async def main() -> None:
        recorder = UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=3600)
        await recorder.start()
        await recorder.aclose()

    run(main)
    assert set(rows_of(admin_engine, tenant)) == {e.request_id for e in good}
    assert spool_files(tmp_path) == []


def test_values_too_wide_for_the_columns_are_cut_not_refused(
    database_url: str, admin_engine: Engine, tenant: str, tmp_path: Path
) -> None:
    wide = event(tenant, model="m" * 300, status="s" * 50, error="e\x00rr" * 1000, prompt_tokens=2**40)
    normal = event(tenant)

    async def main() -> None:
        async with UsageRecorder(database_url, spool_dir=tmp_path, flush_interval_s=3600) as recorder:
            recorder.record(wide)
            recorder.record(normal)
            await recorder.flush()

    run(main)
    stored = rows_of(admin_engine, tenant)
    assert set(stored) == {wide.request_id, normal.request_id}
    row = stored[wide.request_id]
    assert row["model"] == "m" * 128 and row["status"] == "s" * 32
    assert "\x00" not in row["error"] and row["prompt_tokens"] == 2**31 - 1


def test_record_after_close_is_spooled_not_lost(down_url: str, tenant: str, tmp_path: Path) -> None:
    late = event(tenant)

    async def main() -> None:
        recorder = UsageRecorder(down_url, spool_dir=tmp_path, flush_interval_s=3600)
        await recorder.start()
        await recorder.aclose()
        recorder.record(late)
        assert recorder.pending == 0

    run(main)
    [path] = spool_files(tmp_path)
    assert UsageEvent.from_json(path.read_text().strip()) == late


def test_event_json_round_trip() -> None:
    original = event("t", key_id=None, error="x", created_at=datetime(2026, 11, 1, tzinfo=UTC))
    assert UsageEvent.from_json(original.to_json()) == original
    with pytest.raises(ValueError):
        UsageEvent.from_json('{"request_id": "')


# -- export -----------------------------------------------------------------------


def test_billing_period() -> None:
    assert billing_period("2026-11") == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert billing_period("2026-12") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    for bad in ("2026-13", "2026-00", "26-11", "2026/11", "november"):
        with pytest.raises(UsageExportError):
            billing_period(bad)


@pytest.fixture
def period_rows(database_url: str, tenant: str, tmp_path: Path) -> tuple[str, list[UsageEvent]]:
    """Rows of two tenants in and around a billing period no other test uses."""
    period = f"{random.randint(2200, 2900)}-{random.randint(1, 12):02d}"
    start, end = billing_period(period)
    other = f"{tenant}-other"
    events = [
        event(tenant, created_at=start, cost_micros_usd=1_500_000),  # first instant: included
        event(tenant, created_at=start + timedelta(days=3), cost_micros_usd=7, key_id=None, error='a, "quoted"\nerror'),
        event(other, created_at=start + timedelta(days=2), cost_micros_usd=20),
        event(tenant, created_at=end - timedelta(microseconds=1), cost_micros_usd=123_456),  # last instant
        event(tenant, created_at=start - timedelta(microseconds=1), cost_micros_usd=5),  # before: excluded
        event(tenant, created_at=end, cost_micros_usd=5),  # end is exclusive
    ]

    async def main() -> None:
        async with UsageRecorder(database_url, spool_dir=tmp_path / "spool", flush_interval_s=3600) as recorder:
            for e in events:
                recorder.record(e)
            await recorder.flush()

    run(main)
    return period, events


def in_period(events: list[UsageEvent], period: str, tenant_id: str | None) -> list[UsageEvent]:
    start, end = billing_period(period)
    chosen = [e for e in events if start <= e.created_at < end and (tenant_id is None or e.tenant_id == tenant_id)]
    return sorted(chosen, key=lambda e: e.created_at)


def test_csv_export_matches_the_rows(
    database_url: str, tenant: str, period_rows: tuple[str, list[UsageEvent]], tmp_path: Path
) -> None:
    period, events = period_rows
    start, end = billing_period(period)
    out = tmp_path / "usage.csv"
    summary = export_usage(database_url, start=start, end=end, tenant_id=tenant, fmt="csv", dest=str(out))
    expected = in_period(events, period, tenant)
    assert len(expected) == 3
    assert summary.rows == 3
    assert summary.cost_micros_usd == 1_500_000 + 7 + 123_456
    assert summary.cost_usd == Decimal("1.623463")

    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["request_id"] for r in rows] == [str(e.request_id) for e in expected]
    for row, e in zip(rows, expected, strict=True):
        assert datetime.fromisoformat(row["created_at"]) == e.created_at
        assert row["tenant_id"] == tenant and row["model"] == e.model and row["status"] == e.status
        assert row["key_id"] == (str(e.key_id) if e.key_id else "")
        assert int(row["cost_micros_usd"]) == e.cost_micros_usd
        assert Decimal(row["cost_usd"]) == Decimal(e.cost_micros_usd) / 1_000_000
        assert int(row["prompt_tokens"]) == e.prompt_tokens and row["cache_hit"] == "false"
        assert row["error"] == (e.error or "")

    # Without the tenant filter the other tenant's row is there too, still in time order.
    everyone = export_usage(database_url, start=start, end=end, fmt="csv", dest=str(out))
    assert everyone.rows == 4
    with open(out, newline="") as handle:
        assert [r["request_id"] for r in csv.DictReader(handle)] == [
            str(e.request_id) for e in in_period(events, period, None)
        ]


def test_parquet_export_has_typed_columns(
    database_url: str, tenant: str, period_rows: tuple[str, list[UsageEvent]], tmp_path: Path
) -> None:
    import pyarrow as pa

    period, events = period_rows
    start, end = billing_period(period)
    out = tmp_path / "usage.parquet"
    summary = export_usage(
        database_url, start=start, end=end, tenant_id=tenant, fmt="parquet", dest=str(out), fetch_size=2
    )
    expected = in_period(events, period, tenant)
    table = pq.read_table(out)
    assert summary.rows == table.num_rows == 3
    assert table.schema.field("cost_micros_usd").type == pa.int64()
    assert table.schema.field("cost_usd").type == pa.decimal128(20, 6)
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("cache_hit").type == pa.bool_()
    data = table.to_pylist()
    assert [r["request_id"] for r in data] == [str(e.request_id) for e in expected]
    assert [r["created_at"] for r in data] == [e.created_at for e in expected]
    assert [r["cost_micros_usd"] for r in data] == [e.cost_micros_usd for e in expected]
    assert [r["cost_usd"] for r in data] == [Decimal(e.cost_micros_usd) / 1_000_000 for e in expected]
    assert [r["key_id"] for r in data] == [str(e.key_id) if e.key_id else None for e in expected]


def test_empty_period_exports_a_header_only_file(database_url: str, tmp_path: Path) -> None:
    start, end = billing_period("1999-01")
    out = tmp_path / "empty.parquet"
    summary = export_usage(database_url, start=start, end=end, tenant_id="nobody", fmt="parquet", dest=str(out))
    assert summary.rows == 0 and summary.cost_micros_usd == 0
    assert pq.read_table(out).num_rows == 0
    csv_out = tmp_path / "empty.csv"
    export_usage(database_url, start=start, end=end, tenant_id="nobody", fmt="csv", dest=str(csv_out))
    assert csv_out.read_text().splitlines() == [csv_out.read_text().splitlines()[0]]
    assert csv_out.read_text().startswith("request_id,created_at,")


def test_export_refuses_bad_arguments(database_url: str, tmp_path: Path) -> None:
    start, end = billing_period("2026-11")
    with pytest.raises(UsageExportError, match="end must be after start"):
        export_usage(database_url, start=end, end=start, dest=str(tmp_path / "x.csv"))
    with pytest.raises(UsageExportError, match="does not exist"):
        export_usage(database_url, start=start, end=end, dest=str(tmp_path / "missing" / "x.csv"))
    with pytest.raises(UsageExportError, match="s3://bucket/key"):
        export_usage(database_url, start=start, end=end, dest="s3://bucket-only/")
    with pytest.raises(UsageExportError, match="unsupported destination"):
        export_usage(database_url, start=start, end=end, dest="gs://bucket/key")
    with pytest.raises(UsageExportError, match="unknown format"):
        export_usage(database_url, start=start, end=end, fmt="xlsx", dest=str(tmp_path / "x"))  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_export_through_aws_endpoint_url(
    database_url: str,
    tenant: str,
    period_rows: tuple[str, list[UsageEvent]],
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="billing")
    period, events = period_rows
    start, end = billing_period(period)

    summary = export_usage(
        database_url, start=start, end=end, tenant_id=tenant, fmt="csv", dest=f"s3://billing/{period}/usage.csv"
    )
    body = client.get_object(Bucket="billing", Key=f"{period}/usage.csv")["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert summary.rows == len(rows) == 3
    assert [r["request_id"] for r in rows] == [str(e.request_id) for e in in_period(events, period, tenant)]

    export_usage(database_url, start=start, end=end, tenant_id=tenant, fmt="parquet", dest="s3://billing/u.parquet")
    data = client.get_object(Bucket="billing", Key="u.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(data)).num_rows == 3

    with pytest.raises(UsageExportError, match="cannot write"):
        export_usage(database_url, start=start, end=end, tenant_id=tenant, dest="s3://no-such-bucket/u.csv")
