"""Embedded PostgreSQL and Redis start once, are reused, keep data, and stop."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from core.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.conftest import short_tmp


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = short_tmp("cpemb")
    yield path
    for server in (EmbeddedPostgres(path), EmbeddedRedis(path)):
        server.stop()
    shutil.rmtree(path, ignore_errors=True)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_postgres_lifecycle_reuse_and_persistence(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir, database="copilot")
    assert not server.status().running

    url = server.start()
    first = server.status()
    assert first.running and first.version and first.version.startswith("16")
    assert first.detail.startswith("vector ")
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")

    # A second start reuses the running server instead of launching another.
    assert server.start() == url
    assert server.status().pid == first.pid

    assert server.stop() is True
    assert not server.status().running
    assert server.stop() is False  # stopping twice is harmless

    server.start()
    assert server.status().pid != first.pid
    with psycopg.connect(_plain(url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_redis_lifecycle_reuse_and_persistence(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    assert not server.status().running
    url = server.start()
    first = server.status()
    assert first.running and first.version == "6.2.14"
    client = redis.Redis.from_url(url)
    client.set("kept", "yes")
    client.close()

    assert server.start() == url
    assert server.status().pid == first.pid

    assert server.stop() is True
    assert not server.status().running
    server.start()
    client = redis.Redis.from_url(url)
    assert client.get("kept") == b"yes"  # saved on shutdown, loaded on start
    client.close()


def test_redis_whose_data_dir_was_deleted_still_stops(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    server.start()
    pid = server.status().pid
    assert pid is not None
    shutil.rmtree(data_dir)  # pidfile, socket and snapshot dir gone

    assert server.stop(timeout_s=10) is True
    assert not Path(f"/proc/{pid}").exists()
    assert server.stop() is False


def test_redis_socket_moves_to_tmp_when_path_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = EmbeddedRedis(deep)
    assert len(str(server.socket_path)) <= 100
    assert str(server.socket_path).startswith("/tmp/copilot-redis-")


def test_redis_supports_lua_scripts(redis_client: redis.Redis) -> None:
    # Rate limits (gateway) rely on atomic Lua scripts.
    script = redis_client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(keys=["counter"], args=[3]) == 3
    assert script(keys=["counter"], args=[4]) == 7
