"""``core.repositories.chunks.nearest_chunks``: right answers, own chunks only, k results despite HNSW filtering."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, insert, text

from core.config import EMBEDDING_DIM
from core.db import Base, Database, create_async_db_engine
from core.repositories.chunks import ChunkHit, anearest_chunks, ef_search_for, nearest_chunks
from gateway.embedder import embed_text
from pipelines.context import PipelineContext
from pipelines.text import embed_pending, extract_text
from tests.conftest import TEST_APP_USER, act_as_app

from .conftest import add_merchant, add_product, add_reviews

REVIEWS = {
    "R1": "The coffee was cold and we waited forty minutes for it.",
    "R2": "Lovely terrace with a view of the river, perfect in summer.",
    "R3": "Friendly barista and a great cappuccino with oat milk.",
    "R4": "The card machine was down and I could not pay by card.",
}


@pytest.fixture
def owner(engine: Engine) -> Iterator[Connection]:
    """An owner connection whose transaction is rolled back after the test."""
    with engine.connect() as connection:
        transaction = connection.begin()
        yield connection
        transaction.rollback()


@pytest.fixture
def two_merchants(ctx: PipelineContext, engine: Engine) -> None:
    for merchant in ("M1", "M2"):
        add_merchant(engine, merchant)
        add_reviews(engine, merchant, REVIEWS)
    add_product(engine, "M1", "P1", "Cold brew", category="Coffee", description="Coffee steeped cold for 18 hours.")
    extract_text(ctx, None)
    embed_pending(ctx)


def _chunk_ids(conn: Connection, merchant_id: str) -> set[int]:
    rows = conn.execute(text("SELECT chunk_id FROM text_chunks WHERE merchant_id = :m"), {"m": merchant_id})
    return {int(row.chunk_id) for row in rows}


@pytest.mark.usefixtures("two_merchants")
def test_finds_the_right_review_of_the_merchant_only_as_the_app_role(owner: Connection) -> None:
    m1_chunks = _chunk_ids(owner, "M1")
    act_as_app(owner, "M1")
    assert owner.execute(text("SELECT current_user")).scalar_one() == TEST_APP_USER

    hits = nearest_chunks(owner, "M1", embed_text("cold coffee and a long wait"), k=3)
    assert len(hits) == 3 and (hits[0].source_type, hits[0].source_id) == ("review", "R1")
    assert {h.chunk_id for h in hits} <= m1_chunks
    assert hits[0].content == REVIEWS["R1"] and hits[0].metadata["rating"] == 4
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)

    terrace = nearest_chunks(owner, "M1", embed_text("terrace view"), k=1)
    assert [h.source_id for h in terrace] == ["R2"]

    # Row-level security: scoped to M1, M2's chunks do not exist.
    assert nearest_chunks(owner, "M2", embed_text("cold coffee"), k=3) == []


@pytest.mark.usefixtures("two_merchants")
def test_source_type_filter(owner: Connection) -> None:
    query = embed_text("cold coffee")
    assert {h.source_type for h in nearest_chunks(owner, "M1", query, k=10, source_types=["review"])} == {"review"}
    products = nearest_chunks(owner, "M1", query, k=10, source_types=["product"])
    assert [(h.source_type, h.source_id) for h in products] == [("product", "P1")]
    assert nearest_chunks(owner, "M1", query, k=10, source_types=[]) == []
    every = nearest_chunks(owner, "M1", query, k=10)
    assert len(every) == 5 and every[0].source_id in ("R1", "P1")


def test_bad_queries(owner: Connection) -> None:
    with pytest.raises(ValueError, match="dimensions"):
        nearest_chunks(owner, "M1", [0.1] * 3)
    with pytest.raises(ValueError, match="k must"):
        nearest_chunks(owner, "M1", [0.1] * EMBEDDING_DIM, k=0)
    with pytest.raises(ValueError, match="NaN"):
        nearest_chunks(owner, "M1", [math.nan] * EMBEDDING_DIM)
    assert nearest_chunks(owner, "M1", [0.0] * EMBEDDING_DIM) == []


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def _cosine_distance(a: list[float], b: list[float]) -> float:
    return 1.0 - sum(x * y for x, y in zip(_unit(a), _unit(b), strict=True))


def test_k_results_when_other_merchants_crowd_the_index(engine: Engine, owner: Connection) -> None:
    rng = random.Random(5)
    query = _unit([rng.gauss(0, 1) for _ in range(EMBEDDING_DIM)])
    table = Base.metadata.tables["text_chunks"]

    def row(merchant: str, index: int, vector: list[float]) -> dict[str, object]:
        return {
            "merchant_id": merchant,
            "source_type": "review",
            "source_id": f"{merchant}-{index}",
            "chunk_index": 0,
            "content": f"chunk {index} of {merchant}",
            "content_sha256": "0" * 64,
            "embedding": vector,
            "embedding_model": "test",
        }

    # 260 chunks of other merchants all but identical to the query, and a
    # merchant whose 12 chunks are far from it: the HNSW candidates
    # (ef_search of them) are all someone else's.
    crowd = [row(f"O{i % 6}", i, [q + rng.gauss(0, 0.01) for q in query]) for i in range(260)]
    mine = [row("T", i, _unit([rng.gauss(0, 1) for _ in range(EMBEDDING_DIM)])) for i in range(12)]
    mine.append({**row("T", 99, [0.0] * EMBEDDING_DIM), "content": "emoji-only review"})  # no direction
    with engine.begin() as conn:
        conn.execute(insert(table), crowd + mine)
        conn.execute(text("ANALYZE text_chunks"))

    # Make the planner take the HNSW index, as it does for large merchants.
    for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
        owner.execute(text(f"SET LOCAL {setting} = off"))
    act_as_app(owner, "T")
    q = "[" + ",".join(map(repr, query)) + "]"
    ann = "SELECT chunk_id FROM text_chunks WHERE merchant_id = 'T' ORDER BY embedding <=> CAST(:q AS vector) LIMIT 5"
    plan = "\n".join(r[0] for r in owner.execute(text("EXPLAIN " + ann), {"q": q}))
    assert "ix_text_chunks_embedding_hnsw" in plan
    owner.execute(text("SELECT set_config('hnsw.ef_search', :v, true)"), {"v": str(ef_search_for(5))})
    assert len(owner.execute(text(ann), {"q": q}).all()) < 5  # the underflow, raw
    owner.execute(text("SELECT set_config('hnsw.ef_search', '40', true)"))

    expected = sorted((_cosine_distance(query, r["embedding"]), r["source_id"]) for r in mine[:-1])  # type: ignore[arg-type]
    for k in (1, 5, 12, 20):
        hits = nearest_chunks(owner, "T", query, k=k)
        assert [h.source_id for h in hits] == [source_id for _, source_id in expected[:k]]
        assert all(abs(h.distance - d) < 1e-4 for h, (d, _) in zip(hits, expected, strict=False))
    # The caller's ef_search is back as it was.
    assert owner.execute(text("SELECT current_setting('hnsw.ef_search')")).scalar_one() == "40"


@pytest.mark.usefixtures("two_merchants")
def test_async_variant(text_database_url: str, db_settings: object) -> None:
    async def search() -> list[ChunkHit]:
        engine = create_async_db_engine(text_database_url, db_settings)  # type: ignore[arg-type]
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f"SET LOCAL ROLE {TEST_APP_USER}"))
                await conn.execute(text("SELECT set_config('app.merchant_id', 'M1', true)"))
                return await anearest_chunks(conn, "M1", embed_text("card machine down"), k=2)
        finally:
            await engine.dispose()

    hits = asyncio.run(search())
    assert len(hits) == 2 and hits[0].source_id == "R4"


@pytest.mark.usefixtures("two_merchants")
def test_through_a_merchant_session(text_db: Database) -> None:
    with text_db.merchant_session("M1") as session:
        hits = nearest_chunks(session, "M1", embed_text("river terrace"), k=2)
        other = nearest_chunks(session, "M2", embed_text("river terrace"), k=2)
    assert hits[0].source_id == "R2" and other == []
