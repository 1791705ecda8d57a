"""A minimal gateway replica for the cross-process tests: one KeyAuthenticator and KeyStore.

Run as ``python -m tests.gateway.key_worker <database_url> <redis_url>``; it
answers one line per command on stdin:

- ``auth <key>`` → ``ok <key_id>`` or ``denied <message>``
- ``revoke <key_id>`` → ``revoked``
- ``rotate <key_id> <overlap_s>`` → ``rotated <new_key_id> <plaintext>``
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

import redis
import redis.asyncio
from sqlalchemy import create_engine, pool

from core.db.engine import normalize_url
from gateway.errors import InvalidApiKeyError
from gateway.keys import KeyAuthenticator, KeyStore


async def main(database_url: str, redis_url: str) -> None:
    engine = create_engine(normalize_url(database_url), poolclass=pool.NullPool)
    sync_redis = redis.Redis.from_url(redis_url)
    store = KeyStore(engine, redis_client=sync_redis)
    # A cache TTL far longer than the test's bound: only the Redis signal can propagate changes in time.
    auth = KeyAuthenticator(store, redis.asyncio.Redis.from_url(redis_url), cache_ttl_s=600, signal_poll_s=0.5)
    print("ready", flush=True)
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        command, *args = line.split()
        if command == "auth":
            try:
                ctx = await auth.authenticate(args[0])
                print(f"ok {ctx.key_id}", flush=True)
            except InvalidApiKeyError as exc:
                print(f"denied {exc}", flush=True)
        elif command == "revoke":
            await asyncio.to_thread(store.revoke, uuid.UUID(args[0]))
            print("revoked", flush=True)
        elif command == "rotate":
            overlap = timedelta(seconds=float(args[1]))
            record, plaintext = await asyncio.to_thread(store.rotate, uuid.UUID(args[0]), overlap)
            print(f"rotated {record.key_id} {plaintext}", flush=True)
        else:
            print(f"error unknown command {command}", flush=True)
    await auth.aclose()
    engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
