"""``copilot ask``: one question to the co-pilot from the command line.

The composition root for the orchestrator in app processes is
:func:`open_copilot`: the gateway (remote or in process), async sessions on
the RLS-bound app role, the Postgres checkpointer for conversations and the
Langfuse tracer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated

import typer
from rich.console import Console

from core.config import Settings
from core.errors import ValidationFailedError

console = Console()


def checkpointer_url(admin_url: str) -> str:
    """A libpq URL for the checkpointer (owner role: it creates and writes its own tables)."""
    from core.db.engine import normalize_url

    return normalize_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def open_copilot(settings: Settings, *, database_url: str, redis_url: str | None) -> AsyncIterator[object]:
    """A ready :class:`orchestrator.service.Copilot`, closed on exit."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from app.llm import open_gateway
    from core.db.engine import app_url, create_async_db_engine
    from core.db.session import make_async_sessionmaker
    from gateway.tracing import get_langfuse
    from orchestrator.service import Copilot
    from orchestrator.tracing import GraphTracer

    engine = create_async_db_engine(app_url(database_url, settings.database), settings.database)
    try:
        async with (
            open_gateway(settings, database_url=database_url, redis_url=redis_url) as gateway,
            AsyncPostgresSaver.from_conn_string(checkpointer_url(database_url)) as saver,
        ):
            await saver.setup()
            tracer = GraphTracer(get_langfuse(settings.langfuse, environment=settings.environment.value))
            try:
                yield Copilot(
                    gateway=gateway,
                    sessions=make_async_sessionmaker(engine),
                    settings=settings.orchestrator,
                    tracer=tracer,
                    checkpointer=saver,
                )
            finally:
                tracer.flush()
    finally:
        await engine.dispose()


def ask(
    question: Annotated[str, typer.Argument(help="The question, in English, French, Spanish or German.")],
    merchant: Annotated[str, typer.Option("--merchant", "-m", help="The merchant asking (its id).")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Treat this date (YYYY-MM-DD) as today (default: today there).")
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="A conversation id (UUID) to continue or start.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print answer, facts, citations and trace_id as JSON.")
    ] = False,
) -> None:
    """Ask the co-pilot a question about one merchant's business."""
    from app.cli import _settings
    from core.embedded import resolve_services

    settings = _settings()
    day: date | None = None
    if as_of is not None:
        try:
            day = date.fromisoformat(as_of)
        except ValueError as exc:
            raise ValidationFailedError(f"--as-of must be a date (YYYY-MM-DD), got {as_of!r}") from exc
    urls = resolve_services(settings, start=True, redis=settings.gateway.url is None)

    async def run() -> object:
        async with open_copilot(settings, database_url=urls.database_url, redis_url=urls.redis_url) as copilot:
            return await copilot.ask(merchant, question, as_of=day, conversation_id=conversation)  # type: ignore[attr-defined]

    reply = asyncio.run(run())
    data = reply.model_dump(mode="json")  # type: ignore[attr-defined]
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return
    console.print(data["answer"], highlight=False, soft_wrap=True)
    for citation in data["citations"]:
        console.print(f"  [{citation['source_type']} {citation['source_id']}] {citation['snippet']}", highlight=False)
    console.print(f"[dim]trace {data['trace_id']} · {len(data['facts'])} facts · {data['source']}[/dim]")


__all__ = ["ask", "checkpointer_url", "open_copilot"]
