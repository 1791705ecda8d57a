"""The S3 path, against a local S3-compatible server (moto in server mode) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pipelines.context import PipelineContext
from pipelines.ingest import ingest
from pipelines.landing import S3Root
from pipelines.synthetic import GenerateConfig, generate
from tests.pipelines.ingest.test_ingest import table_digest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s3gen") / "landing"
    generate(GenerateConfig(merchants=2, days=4, seed=11, out=out))
    return out


def upload(client: Any, folder: Path, bucket: str, prefix: str) -> None:
    client.create_bucket(Bucket=bucket)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def test_s3_gives_the_same_tables_as_the_folder(ctx: PipelineContext, s3_endpoint: str, landing: Path) -> None:
    client = s3_client(s3_endpoint)
    upload(client, landing, "exports", "landing/v1")

    from_s3 = ingest(ctx, S3Root("s3://exports/landing/v1", client))
    assert from_s3.failed_files == []
    s3_tables = table_digest(ctx)
    s3_counts = {d.dataset: (d.rows_read, d.rows_loaded, d.rows_quarantined) for d in from_s3.datasets}
    assert all(
        path.startswith("s3://exports/landing/v1/") for d in from_s3.datasets for path in [f.path for f in d.files]
    )

    # Same data from the folder into the same database changes nothing at all.
    from_folder = ingest(ctx, str(landing))
    assert table_digest(ctx) == s3_tables
    assert {d.dataset: (d.rows_read, d.rows_loaded, d.rows_quarantined) for d in from_folder.datasets} == s3_counts
    assert all(f.rows_changed == 0 for d in from_folder.datasets for f in d.files if d.dataset != "merchants")


def test_cli_reads_s3_through_aws_endpoint_url(s3_endpoint: str, landing: Path, database_url: str) -> None:
    client = s3_client(s3_endpoint)
    upload(client, landing, "cli-exports", "root")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COPILOT_", "AWS_"))}
    env.update(
        COPILOT_DATABASE__URL=database_url, COPILOT_DATABASE__APP_USER="copilot_api_test",
        AWS_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app", "ingest", "s3://cli-exports/root", "--all", "--load-only", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["root"] == "s3://cli-exports/root"
        assert summary["failed_files"] == 0
        by_name = {d["dataset"]: d for d in summary["datasets"]}
        assert by_name["transactions"]["rows_read"] > 0
        assert by_name["transactions"]["rows_read"] == by_name["transactions"]["rows_loaded"]

        missing = subprocess.run(
            [sys.executable, "-m", "app", "ingest", "s3://no-such-bucket/x", "--all", "--load-only"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert missing.returncode == 1
        assert missing.stderr.count("\n") == 1 and "no-such-bucket" in missing.stderr
    finally:
        from sqlalchemy import create_engine, pool, text

        engine = create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool
        )
        with engine.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE merchants, transactions, transaction_items, ingestion_runs, metric_refresh_queue CASCADE"
                )
            )
        engine.dispose()
