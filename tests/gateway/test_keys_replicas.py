"""Revocation and rotation made on one gateway process hold on another within ~2 s."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.keys import KeyStore

ROOT = Path(__file__).resolve().parents[2]
PROPAGATION_BOUND_S = 2.5


class Replica:
    """A gateway process driven line by line over stdin/stdout."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.gateway.key_worker", database_url, redis_url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise AssertionError(f"replica exited with {self.process.poll()}")
        return line

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.readline()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def replicas(database_url: str, redis_url: str) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas for the module (each takes seconds to import SQLAlchemy, Redis, pydantic)."""
    a, b = Replica(database_url, redis_url), Replica(database_url, redis_url)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.close()
        b.close()


def wait_for_denial(replica: Replica, key: str) -> str:
    """Ask ``replica`` until it refuses ``key``; fail if that takes longer than the bound."""
    deadline = time.monotonic() + PROPAGATION_BOUND_S
    while True:
        answer = replica.ask(f"auth {key}")
        if answer.startswith("denied"):
            return answer
        assert time.monotonic() < deadline, f"still accepted after {PROPAGATION_BOUND_S}s: {answer}"
        time.sleep(0.05)


def test_revocation_on_one_replica_holds_on_the_other(
    replicas: tuple[Replica, Replica], store: KeyStore, tenant: str
) -> None:
    a, b = replicas
    record, plaintext = store.create("svc", tenant)
    assert a.ask(f"auth {plaintext}") == f"ok {record.key_id}"
    assert b.ask(f"auth {plaintext}") == f"ok {record.key_id}"  # now cached in B for 600 s

    assert a.ask(f"revoke {record.key_id}") == "revoked"
    assert "revoked" in wait_for_denial(b, plaintext)
    assert "revoked" in a.ask(f"auth {plaintext}")


def test_rotation_on_one_replica_holds_on_the_other(
    replicas: tuple[Replica, Replica], store: KeyStore, tenant: str
) -> None:
    a, b = replicas
    cut, cut_key = store.create("cut", tenant)
    kept, kept_key = store.create("kept", tenant)
    for key in (cut_key, kept_key):
        assert b.ask(f"auth {key}").startswith("ok")

    # No overlap: the old key stops everywhere, the new one works everywhere.
    _, new_id, new_key = a.ask(f"rotate {cut.key_id} 0").split()
    assert "rotated" in wait_for_denial(b, cut_key)
    assert b.ask(f"auth {new_key}") == f"ok {new_id}"

    # With an overlap both keys keep working on every replica.
    _, successor_id, successor_key = a.ask(f"rotate {kept.key_id} 3600").split()
    time.sleep(1.0)  # longer than the signal poll: B has reloaded the old key since
    assert b.ask(f"auth {kept_key}") == f"ok {kept.key_id}"
    assert b.ask(f"auth {successor_key}") == f"ok {successor_id}"
