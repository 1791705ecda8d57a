"""Claims on slow work items, as session-level advisory locks.

Extracting an attachment or embedding a batch takes seconds (OCR, a provider
call). Holding row locks that long would stall the loader and the other text
step, so a worker claims items with ``pg_try_advisory_lock`` on a connection
of its own, does the slow part with no transaction open, and writes the result
in a short transaction. Other workers skip claimed items; a crashed worker's
claims vanish with its connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, text

logger = logging.getLogger(__name__)

# Advisory-lock namespaces (first int4 of the two-key form), one per kind of work.
ATTACHMENT_CLAIMS = 0x7E47
CHUNK_CLAIMS = 0x7E48
INGEST_RUNS = 0x7E49  # held while an ingest run has work schemas (pipelines.ingest.load)

_TRY = text(
    "SELECT k FROM unnest(CAST(:keys AS text[])) AS k WHERE pg_try_advisory_lock(CAST(:space AS int4), hashtext(k))"
)
_RELEASE = text("SELECT pg_advisory_unlock_all()")


def try_claim(claims: Connection, space: int, keys: Sequence[str]) -> set[str]:
    """Claim what is free among ``keys``; returns the claimed keys.

    The caller must re-read the items' state in a *later* statement: a worker
    that just finished one committed before it released its claim, so only a
    new snapshot shows that the item is done. (Hash collisions only make a
    worker skip an item for this run.)
    """
    if not keys:
        return set()
    return {row.k for row in claims.execute(_TRY, {"space": space, "keys": list(keys)})}


def release_all(claims: Connection) -> None:
    """Release every claim of the connection and end its transaction."""
    claims.execute(_RELEASE)
    claims.commit()


def release_quietly(claims: Connection) -> None:
    """:func:`release_all` for ``finally`` blocks: never masks the original error."""
    try:
        claims.rollback()
        release_all(claims)
    except Exception:  # a broken connection drops its locks with it
        logger.warning("text.claims_not_released", exc_info=True)
