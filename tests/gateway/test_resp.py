"""The limiter's lean Redis client on a real Redis: pipelining, errors, reconnects, timeouts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis import exceptions as redis_errors

from core.embedded import EmbeddedRedis
from gateway.resp import RespClient, encode
from tests.conftest import short_tmp

Runner = Callable[[Callable[[], Coroutine[Any, Any, Any]]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a test's coroutine on the standard loop and on uvloop (the server's loop)."""
    if request.param == "uvloop":
        import uvloop

        return lambda main: uvloop.run(main())
    return lambda main: asyncio.run(main())


def client_for(url: str, **kwargs: Any) -> RespClient:
    source = redis.asyncio.Redis.from_url(url, socket_connect_timeout=1)
    client = RespClient.from_redis(source, **kwargs)
    assert client is not None
    return client


def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert encode(("SET", b"k", 12, "é")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\xc3\xa9\r\n"


def test_from_redis_reads_the_pool_and_refuses_what_it_cannot_serve() -> None:
    unix = RespClient.from_redis(redis.asyncio.Redis.from_url("unix:///tmp/r.sock?db=3"))
    assert unix is not None and unix._path == "/tmp/r.sock" and unix._handshake == [("SELECT", 3)]
    tcp = RespClient.from_redis(redis.asyncio.Redis.from_url("redis://u:pw@h:7000/0"))
    assert tcp is not None and (tcp._host, tcp._port, tcp._path) == ("h", 7000, None)
    assert tcp._handshake == [("AUTH", "u", "pw")]
    tls = RespClient.from_redis(redis.asyncio.Redis.from_url("rediss://h:7001"))
    assert tls is not None and tls._ssl is not None

    class Custom(redis.asyncio.Connection):
        pass

    pool = redis.asyncio.ConnectionPool(connection_class=Custom)
    assert RespClient.from_redis(redis.asyncio.Redis(connection_pool=pool)) is None


def test_concurrent_commands_share_one_connection_and_keep_their_replies(
    redis_url: str, redis_client: redis.Redis, run: Runner
) -> None:
    async def main() -> None:
        client = client_for(redis_url)
        try:
            replies = await asyncio.gather(*(client.execute("ECHO", f"m{i}") for i in range(500)))
            assert replies == [f"m{i}".encode() for i in range(500)]
            counts = await asyncio.gather(*(client.execute("INCR", "resp:counter") for _ in range(300)))
            assert sorted(counts) == list(range(1, 301))
            assert client._conn is not None and client._conn.sent == client._conn.answered == 800
        finally:
            await client.aclose()

    run(main)
    assert redis_client.get("resp:counter") == b"300"


def test_lazy_commands_leave_with_the_next_urgent_write_or_on_their_own(
    redis_url: str, redis_client: redis.Redis, run: Runner
) -> None:
    async def main() -> None:
        client = client_for(redis_url, lazy_delay_s=0.01)
        try:
            await client.execute("PING")  # connected
            conn = client._conn
            assert conn is not None
            lazy = client.send("INCR", "resp:lazy", urgent=False)
            assert conn.out  # held back
            now = client.send("GET", "resp:lazy")  # urgent: both go in one write, in order
            assert await now == b"1" and await lazy == 1
            alone = client.send("INCR", "resp:lazy", urgent=False)
            assert await alone == 2  # its own timer sends it
        finally:
            await client.aclose()

    run(main)


def test_error_replies_raise_redis_errors_and_the_connection_stays_usable(
    redis_url: str, redis_client: redis.Redis, run: Runner
) -> None:
    async def main() -> None:
        client = client_for(redis_url)
        try:
            with pytest.raises(redis_errors.NoScriptError):
                await client.execute("EVALSHA", "0" * 40, 0)
            await client.execute("SET", "resp:str", "x")
            with pytest.raises(redis_errors.ResponseError, match="not an integer"):
                await client.execute("INCR", "resp:str")
            sha = await client.execute("SCRIPT", "LOAD", "return tonumber(ARGV[1]) + 1")
            assert await client.execute("EVALSHA", sha, 0, 41) == 42
        finally:
            await client.aclose()

    run(main)


def test_select_on_connect_uses_the_urls_database(redis_url: str, run: Runner) -> None:
    other_db = redis_url.replace("db=0", "db=5") if "db=0" in redis_url else None
    if other_db is None:
        pytest.skip(
            "needs a Redis URL naming db=0 to switch it to db=5 (the embedded one does); "
            "lifts with COPILOT_TEST_REDIS_URL unset or ending in ?db=0"
        )

    async def main() -> None:
        client = client_for(other_db)
        try:
            await client.execute("SET", "resp:db", "five")
        finally:
            await client.aclose()

    run(main)
    check = redis.Redis.from_url(other_db)
    try:
        assert check.get("resp:db") == b"five"
        check.delete("resp:db")
    finally:
        check.close()


def test_reconnects_after_a_redis_restart(run: Runner) -> None:
    folder = short_tmp("cpgw-resp")
    server = EmbeddedRedis(folder)
    url = server.start()

    async def main() -> None:
        client = client_for(url)
        try:
            assert await client.execute("SET", "resp:k", "1")
            server.stop()
            with pytest.raises((redis_errors.ConnectionError, redis_errors.TimeoutError)):
                await client.execute("GET", "resp:k")  # the old socket is gone, no server to reconnect to
            assert not client.connected
            server.start()
            assert await client.execute("PING") in (b"PONG", "PONG")  # a fresh connection
            assert client.connected
        finally:
            await client.aclose()

    try:
        run(main)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_connecting_to_nothing_fails_every_queued_command(run: Runner) -> None:
    async def main() -> None:
        client = RespClient(path="/nonexistent-dir/redis.sock")
        outcomes = await asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
        assert all(isinstance(o, redis_errors.ConnectionError) for o in outcomes)
        assert not client.connected

    run(main)


def test_an_unanswered_command_times_out_and_the_next_one_reconnects(tmp_path: Path, run: Runner) -> None:
    folder = short_tmp("cpgw-mute")
    path = str(folder / "mute.sock")
    accepted: list[asyncio.StreamWriter] = []

    async def main() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing

        server = await asyncio.start_unix_server(mute, path)
        client = RespClient(path=path, reply_timeout_s=0.05)
        try:
            first, second = client.send("PING"), client.send("PING")
            with pytest.raises(redis_errors.TimeoutError):
                await first
            with pytest.raises(redis_errors.TimeoutError):
                await second  # the whole connection was dropped
            assert not client.connected
            # A caller's own tighter bound: disconnect when it fires.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.01):
                    await client.send("PING")
            client.disconnect()
            assert len(accepted) == 2  # the timed-out connection was not reused
        finally:
            await client.aclose()
            server.close()
            for writer in accepted:
                writer.close()
            await server.wait_closed()

    try:
        run(main)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
