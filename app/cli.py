"""The ``copilot`` command line.

Every expected failure prints one line (``copilot: error: ...``) and exits
non-zero; tracebacks are for bugs. Heavy imports happen inside commands so
``copilot --help`` and ``copilot status`` stay fast.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from app.airflow_cli import app as airflow_app
from app.ask_cli import ask as ask_command
from app.gateway_cli import app as gateway_app
from app.insights_cli import app as insights_app
from app.keys_cli import app as keys_app
from app.usage_cli import app as usage_app
from core.config import Settings, get_settings
from core.errors import CopilotError

app = typer.Typer(
    name="copilot",
    help="Merchant Co-pilot: embedded services, database, data generation, LLM gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(airflow_app, name="airflow")
app.add_typer(gateway_app, name="gateway")
app.add_typer(keys_app, name="keys", help="Virtual API keys of the LLM gateway.")
app.add_typer(usage_app, name="usage", help="Usage records for billing.")
app.command(name="ask")(ask_command)
app.add_typer(insights_app, name="insights", help="Proactive insights: run and list.")

console = Console()
err_console = Console(stderr=True)
_verbose = False


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show log output.")] = False,
) -> None:
    global _verbose
    _verbose = verbose


def _settings() -> Settings:
    settings = get_settings()
    from core.logging import configure_logging

    # Commands print their own results; logs are opt-in so output stays readable.
    configure_logging(settings.log_level if _verbose else "WARNING", json_lines=settings.log_json)
    return settings


@app.command()
def up() -> None:
    """Start the embedded PostgreSQL (pgvector) and Redis, or check the configured ones."""
    from core.embedded import resolve_services

    settings = _settings()
    urls = resolve_services(settings, start=True)
    _check_database(settings, urls.database_url)
    assert urls.redis_url is not None
    _check_redis(settings, urls.redis_url)
    _print_status(settings, as_json=False)


@app.command()
def down() -> None:
    """Stop the embedded services (configured external servers are left alone)."""
    from core.embedded import embedded_services

    settings = _settings()
    postgres, redis_server = embedded_services(settings)
    for name, server in (("postgres", postgres), ("redis", redis_server)):
        stopped = server.stop()
        console.print(f"{name}: {'stopped' if stopped else 'was not running'}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show whether PostgreSQL and Redis run, with their URLs. Starts nothing."""
    _print_status(_settings(), as_json=as_json)


def _print_status(settings: Settings, *, as_json: bool) -> None:
    from core.embedded import ServiceStatus, embedded_services
    from core.logging import redact

    postgres, redis_server = embedded_services(settings)
    rows: list[ServiceStatus] = []
    if settings.database.url is None:
        rows.append(postgres.status())
    else:
        rows.append(_external_postgres_status(settings))
    if settings.redis.url is None:
        rows.append(redis_server.status())
    else:
        rows.append(_external_redis_status(settings))
    if as_json:
        payload = [{**row.__dict__, "url": redact(row.url) if row.url else None} for row in rows]
        console.print_json(json.dumps({"data_dir": str(settings.data_dir), "services": payload}))
        return
    table = Table(title=f"Merchant Co-pilot services (data: {settings.data_dir})")
    for column in ("service", "state", "mode", "version", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.name,
            "[green]running[/]" if row.running else "[red]stopped[/]",
            "embedded" if row.embedded else "external",
            row.version or "-",
            row.detail,
        )
    console.print(table)
    for row in rows:
        if row.url:
            console.print(f"{row.name}: {redact(row.url)}", soft_wrap=True, highlight=False)


def _external_postgres_status(settings: Settings) -> Any:
    from core.embedded import ServiceStatus, _postgres_versions

    assert settings.database.url is not None
    url = settings.database.url.get_secret_value()
    version, vector = _postgres_versions(_plain(url))
    return ServiceStatus(
        "postgres",
        version is not None,
        url=url,
        version=version,
        detail=(f"vector {vector}" if vector else "vector extension missing") if version else "unreachable",
        embedded=False,
    )


def _external_redis_status(settings: Settings) -> Any:
    from core.embedded import ServiceStatus, _redis_version

    assert settings.redis.url is not None
    url = settings.redis.url.get_secret_value()
    version = _redis_version(url)
    return ServiceStatus(
        "redis",
        version is not None,
        url=url,
        version=version,
        detail="" if version else "unreachable",
        embedded=False,
    )


def _plain(url: str) -> str:
    from core.db.engine import normalize_url

    return normalize_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _check_database(settings: Settings, url: str) -> None:
    from core.db import Database

    database = Database(url, settings.database)
    try:
        database.check()
    finally:
        database.dispose()


def _check_redis(settings: Settings, url: str) -> None:
    import redis

    from core.errors import ServiceUnavailableError
    from core.logging import redact

    client = redis.Redis.from_url(url, socket_timeout=settings.redis.socket_timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ServiceUnavailableError(f"cannot reach Redis at {redact(url)}: {exc}") from exc
    finally:
        client.close()


@db_app.command("migrate")
def db_migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply schema migrations and provision the app's database role."""
    from core.db.migrate import migrate
    from core.embedded import resolve_services

    settings = _settings()
    urls = resolve_services(settings, start=True, redis=False)
    _check_database(settings, urls.database_url)
    current = migrate(urls.database_url, settings.database, revision)
    console.print(f"database at revision {current}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or 'base' to drop everything.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revert schema migrations (destroys data in the dropped tables)."""
    from core.db.migrate import current_revision, downgrade
    from core.embedded import resolve_services

    settings = _settings()
    urls = resolve_services(settings, start=False, redis=False)
    _check_database(settings, urls.database_url)
    if not yes and not typer.confirm(f"Downgrade the database to {revision}?"):
        raise typer.Abort()
    downgrade(urls.database_url, revision)
    from core.db import Database

    database = Database(urls.database_url, settings.database)
    try:
        console.print(f"database at revision {current_revision(database.admin_engine) or 'base'}")
    finally:
        database.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at and the newest one available."""
    from core.db import Database
    from core.db.migrate import current_revision, head_revision
    from core.embedded import resolve_services

    settings = _settings()
    urls = resolve_services(settings, start=False, redis=False)
    database = Database(urls.database_url, settings.database)
    try:
        database.check()
        current = current_revision(database.admin_engine)
    finally:
        database.dispose()
    head = head_revision()
    state = "up to date" if current == head else "behind: run `copilot db migrate`"
    console.print(f"current {current or 'base'}, head {head} ({state})")


def _positive(value: int) -> int:
    if value < 1:
        raise typer.BadParameter("must be at least 1")
    return value


@app.command()
def generate(
    merchants: Annotated[int, typer.Option(help="Number of merchants.", callback=_positive)] = 5,
    days: Annotated[int, typer.Option(help="Days of history.", callback=_positive)] = 60,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same bytes.")] = 42,
    out: Annotated[Path, typer.Option(help="Landing root to write.")] = Path("data/landing"),
    end_date: Annotated[str | None, typer.Option(help="Last day generated (YYYY-MM-DD); default 2026-10-31.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="Transaction file format: csv, csv.gz, jsonl, jsonl.gz.")
    ] = "csv.gz",
    no_events: Annotated[bool, typer.Option("--no-events", help="Do not inject labelled events.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a previous generator output.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write synthetic merchant data conforming to DATA_CONTRACT.md."""
    _settings()
    if fmt not in ("csv", "csv.gz", "jsonl", "jsonl.gz"):
        raise typer.BadParameter(f"unknown format {fmt!r}: use csv, csv.gz, jsonl or jsonl.gz", param_hint="--format")
    last_day: date | None = None
    if end_date is not None:
        try:
            last_day = date.fromisoformat(end_date)
        except ValueError:
            raise typer.BadParameter(f"{end_date!r} is not a date (YYYY-MM-DD)", param_hint="--end-date") from None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pipelines.synthetic import GenerateConfig
    from pipelines.synthetic import generate as run_generate

    config = GenerateConfig(
        merchants=merchants,
        days=days,
        seed=seed,
        out=out,
        end_date=last_day,
        fmt=fmt,  # type: ignore[arg-type]
        events=not no_events,
        overwrite=force,
    )
    with Progress(
        TextColumn("[bold]generating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} merchant-days"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json,
    ) as progress:
        task = progress.add_task("generate", total=merchants * days)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            summary = run_generate(config, progress=report)
        except ValueError as exc:
            raise CopilotError(str(exc)) from exc
    data = _summary_dict(summary)
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return
    table = Table(title=f"Generated into {out}")
    table.add_column("dataset")
    table.add_column("rows", justify="right")
    for name, count in data.get("rows", {}).items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    for key, value in data.items():
        if key != "rows":
            console.print(f"{key}: {value}")


def _summary_dict(summary: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(summary) and not isinstance(summary, type):
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(summary).items()}
    return dict(summary)


@app.command()
def ingest(
    root: Annotated[
        str | None, typer.Argument(help="Landing root: a folder or s3://bucket/prefix (default: settings).")
    ] = None,
    on_date: Annotated[str | None, typer.Option("--date", help="Load the dt=YYYY-MM-DD partition.")] = None,
    all_partitions: Annotated[bool, typer.Option("--all", help="Load every partition, oldest first.")] = False,
    dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Only these datasets (repeatable).")] = None,
    load_only: Annotated[
        bool, typer.Option("--load-only", help="Skip aggregates, text extraction, embeddings, insight triggers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the ingest pipeline without Airflow: load, aggregate, extract text, embed, trigger insights."""
    if (on_date is None) == (not all_partitions):
        raise typer.BadParameter("give exactly one of --date YYYY-MM-DD or --all", param_hint="--date/--all")
    partition: date | None = None
    if on_date is not None:
        try:
            partition = date.fromisoformat(on_date)
        except ValueError:
            raise typer.BadParameter(f"{on_date!r} is not a date (YYYY-MM-DD)", param_hint="--date") from None
    from pipelines.ingest import DATASETS

    datasets = tuple(dataset) if dataset else DATASETS
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise typer.BadParameter(
            f"unknown dataset {unknown[0]!r}; use one of {', '.join(DATASETS)}", param_hint="--dataset"
        )
    settings = _settings()
    from pipelines.runner import run_pipeline

    result = run_pipeline(
        settings, root or settings.pipelines.landing_root, partition, datasets=datasets,
        load_only=load_only, show_progress=not as_json, console=err_console,
    )  # fmt: skip
    if as_json:
        console.print_json(json.dumps(result.as_dict(), default=str))
    else:
        _print_ingest(result)
    if result.failed_files:
        for failed in result.failed_files:
            print(f"copilot: error: {_one_line(failed)}", file=sys.stderr)
        raise typer.Exit(1)


def _print_ingest(result: Any) -> None:
    table = Table(title=f"Ingested {result.ingest.root}")
    for column in ("dataset", "files", "read", "loaded", "quarantined", "failed files", "seconds"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for item in result.ingest.datasets:
        table.add_row(
            item.dataset, str(len(item.files)), f"{item.rows_read:,}", f"{item.rows_loaded:,}",
            f"{item.rows_quarantined:,}", str(len(item.failed_files)), f"{item.seconds:.2f}",
        )  # fmt: skip
    console.print(table)
    for name, step in result.steps.items():
        console.print(f"{name}: {json.dumps(step, default=str)}", highlight=False, soft_wrap=True)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; expected failures become one line on stderr and exit code 1 or 2."""
    try:
        app(args=argv, prog_name="copilot", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        print("copilot: aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # Click's usage errors, vendored by Typer
        where = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            where = f" (see '{ctx.command_path} --help')"
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"copilot: error: {_one_line(message)}{where}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except CopilotError as exc:
        print(f"copilot: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = "__".join(str(p) for p in first["loc"]).upper()
        target = f"COPILOT_{loc}" if loc else "settings"
        print(f"copilot: error: invalid configuration {target}: {_one_line(first['msg'])}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("copilot: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
