"""``copilot insights ...``: run the proactive insights and list what was stored.

``run --as-of DATE`` runs every merchant with metrics on that day (bulk
detection, then narration of the new insights through the LLM gateway);
with ``--merchant ID`` it runs the insights graph for that merchant alone,
inside one transaction scoped to the merchant (row-level security applies).
``list --merchant ID`` prints the merchant's stored insights, newest first.

Without a configured gateway (``COPILOT_GATEWAY__URL``) the gateway runs in
process with the built-in offline model. Expected failures print one line
(``copilot: error: ...``) and exit 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.config import Settings, get_settings
from core.errors import CopilotError, NotFoundError, ValidationFailedError

if TYPE_CHECKING:
    from core.db import Database
    from core.embedded import ServiceUrls

app = typer.Typer(
    help="Proactive insights: run detection and narration, list stored insights.",
    no_args_is_help=True,
    add_completion=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
MerchantOption = Annotated[str, typer.Option("--merchant", help="The merchant id.")]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Expected failures become ``copilot: error: ...`` and exit code 1, even when this sub-app runs alone."""
    try:
        yield
    except CopilotError as exc:
        print(f"copilot: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise typer.Exit(1) from None


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailedError(f"--as-of: {value!r} is not a date (YYYY-MM-DD)") from None


@contextmanager
def _database(settings: Settings, *, redis: bool) -> Iterator[tuple[Database, ServiceUrls]]:
    from sqlalchemy import inspect

    from core.db import Database
    from core.embedded import resolve_services

    urls = resolve_services(settings, start=True, redis=redis)
    database = Database(urls.database_url, settings.database)
    try:
        database.check()
        if not inspect(database.admin_engine).has_table("insights"):
            raise CopilotError("the database has no insights table: run `copilot db migrate` first")
        yield database, urls
    finally:
        database.dispose()


def _require_merchant(database: Database, merchant_id: str) -> None:
    from sqlalchemy import text

    with database.merchant_session(merchant_id) as session:
        found = session.execute(text("SELECT 1 FROM merchants WHERE merchant_id = :m"), {"m": merchant_id}).first()
    if found is None:
        raise NotFoundError(f"unknown merchant {merchant_id!r}")


# --------------------------------------------------------------------------- run


async def _run(
    settings: Settings,
    database: Database,
    urls: ServiceUrls,
    as_of: date,
    merchant_id: str | None,
    model: str,
    concurrency: int,
) -> dict[str, Any]:
    from app.llm import open_gateway
    from gateway.tracing import get_langfuse
    from orchestrator.insights.bulk import run_all
    from orchestrator.insights.graph import InsightsContext, run_insights_graph
    from orchestrator.insights.narrate import NarrationSettings
    from orchestrator.tracing import GraphTracer

    narration = NarrationSettings(model=model)
    tracer = GraphTracer(get_langfuse(settings.langfuse, environment=settings.environment.value))
    try:
        async with open_gateway(settings, database_url=urls.database_url, redis_url=urls.redis_url) as gateway:
            if merchant_id is None:
                bulk = await run_all(
                    database.admin_engine, gateway, as_of, settings=narration, concurrency=concurrency, tracer=tracer
                )
                d, n = bulk.detection, bulk.narration
                return {
                    "as_of": as_of.isoformat(), "merchants": d.merchants, "candidates": d.candidates,
                    "selected": d.selected, "stored": d.stored, "narrated": n.wording,
                    "seconds": round(d.seconds + n.seconds, 3),
                }  # fmt: skip
            # One unit of work as the app role scoped to the merchant: commits after the graph, rolls back on error.
            with database.merchant_session(merchant_id) as session:
                context = InsightsContext(
                    merchant_id, session, gateway, narration=narration, concurrency=concurrency, tracer=tracer
                )
                _, s = await run_insights_graph(context, as_of)
            return {
                "as_of": s.as_of, "merchants": 1, "candidates": s.candidates, "selected": s.selected,
                "stored": s.stored, "narrated": s.wording, "trace_id": s.trace_id,
            }  # fmt: skip
    finally:
        tracer.flush()


@app.command("run")
def run(
    as_of: Annotated[str, typer.Option("--as-of", help="The merchant-local day analysed (YYYY-MM-DD).")],
    merchant: Annotated[
        str | None, typer.Option("--merchant", help="Run this merchant only (default: every merchant with data).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Gateway model alias for the wording (default: settings).")
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Narration calls in flight at once.", min=1)] = 8,
    as_json: JsonOption = False,
) -> None:
    """Detect, narrate, verify and store the day's insights; print what was done."""
    with _one_line_errors():
        day = _day(as_of)
        settings = get_settings()
        with _database(settings, redis=settings.gateway.url is None) as (database, urls):
            if merchant is not None:
                _require_merchant(database, merchant)
            alias = model or settings.orchestrator.chat_model
            result = asyncio.run(_run(settings, database, urls, day, merchant, alias, concurrency))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    n = result["narrated"]
    scope = f"merchant {merchant}" if merchant else f"{result['merchants']} merchants"
    typer.echo(
        f"insights {result['as_of']} ({scope}): {result['candidates']} candidates, {result['selected']} selected, "
        f"{result['stored']} stored; wording: {n['model']} by the model, {n['repaired']} repaired, "
        f"{n['fallback']} fallback"
    )


# --------------------------------------------------------------------------- list

_LIST = """
SELECT insight_id, kind, metric, direction, period_start, period_end, as_of, impact_minor, title, body, facts,
       evidence->>'currency' AS currency, evidence->>'wording' AS wording
FROM insights
WHERE merchant_id = :m
ORDER BY as_of DESC, score DESC, insight_id
LIMIT :limit
"""


def _major(minor: int | float, currency: str) -> float:
    from orchestrator.insights.render import minor_exponent

    return float(Decimal(str(minor)).scaleb(-minor_exponent(currency)))


def _fact_json(fact: dict[str, Any], currency: str) -> dict[str, Any]:
    """A stored fact with money in major units (``unit`` becomes the currency code)."""
    out = {k: v for k, v in fact.items() if k != "currency"}
    if fact.get("unit") == "minor":
        code = str(fact.get("currency") or currency)
        out["value"] = _major(fact["value"], code)
        out["unit"] = code
    return out


def _item(row: Any) -> dict[str, Any]:
    currency = str(row.currency or "")
    return {
        "id": str(row.insight_id),
        "kind": row.kind,
        "metric": row.metric,
        "direction": row.direction,
        "period": {"start": row.period_start.isoformat(), "end": row.period_end.isoformat()},
        "as_of": row.as_of.isoformat(),
        "impact": {"amount": _major(row.impact_minor, currency), "currency": currency},
        "title": row.title,
        "body": row.body,
        "facts": [_fact_json(f, currency) for f in row.facts],
        "wording": row.wording,
    }


@app.command("list")
def list_insights(
    merchant: MerchantOption,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.", min=1)] = 20,
    as_json: JsonOption = False,
) -> None:
    """List a merchant's stored insights, newest first."""
    from sqlalchemy import text

    with _one_line_errors():
        settings = get_settings()
        with _database(settings, redis=False) as (database, _):
            _require_merchant(database, merchant)
            with database.merchant_session(merchant) as session:
                rows = session.execute(text(_LIST), {"m": merchant, "limit": limit}).all()
    items = [_item(r) for r in rows]
    if as_json:
        typer.echo(json.dumps(items, indent=2, ensure_ascii=False))
        return
    if not items:
        typer.echo(f"no insights for {merchant}")
        return
    for item in items:
        period = item["period"]
        span = period["start"] if period["start"] == period["end"] else f"{period['start']} to {period['end']}"
        typer.echo(f"{item['as_of']}  {item['kind']} ({item['direction']}, {span})  {item['title']}")
        typer.echo(f"    {item['body']}")
