"""``copilot usage ...``: billing exports of the gateway's usage records.

``export`` writes the ``usage_records`` of a billing period (or any
``[start, end)``), optionally of one tenant, in ``created_at`` order as CSV or
Parquet to a local file or ``s3://bucket/key`` (``AWS_ENDPOINT_URL`` and the
usual AWS variables apply), and prints a one-line summary.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Annotated

import typer

from core.config import get_settings

app = typer.Typer(help="Gateway usage records: billing exports.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Gateway usage records: billing exports."""
    # A callback keeps `export` a subcommand even while it is the only one.


def _instant(value: str, option: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO datetime (UTC when it has no offset)."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date or ISO datetime", param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("export")
def export(
    out: Annotated[str, typer.Option("--out", help="Destination: a file path or s3://bucket/key.")],
    period: Annotated[str | None, typer.Option("--period", help="Billing period YYYY-MM (UTC calendar month).")] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="First instant included: YYYY-MM-DD or ISO datetime (UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="First instant excluded (with --start).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's records.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Export usage records of a period for billing (one row per gateway request)."""
    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter(f"unknown format {fmt!r}: use csv or parquet", param_hint="--format")
    if period is not None and (start is not None or end is not None):
        raise typer.BadParameter("give --period or --start/--end, not both", param_hint="--period")
    if period is None and (start is None or end is None):
        raise typer.BadParameter("give --period YYYY-MM, or both --start and --end", param_hint="--period")

    from gateway.metering import UsageExportError, billing_period, export_usage

    if period is not None:
        try:
            first, last = billing_period(period)
        except UsageExportError as exc:
            raise typer.BadParameter(str(exc), param_hint="--period") from None
    else:
        assert start is not None and end is not None
        first, last = _instant(start, "--start"), _instant(end, "--end")
        if last <= first:
            raise typer.BadParameter("--end must be after --start", param_hint="--end")

    from core.embedded import resolve_services

    settings = get_settings()
    urls = resolve_services(settings, start=True, redis=False)
    summary = export_usage(
        urls.database_url, start=first, end=last, tenant_id=tenant, fmt="csv" if fmt == "csv" else "parquet", dest=out
    )
    if as_json:
        typer.echo(json.dumps(summary.as_dict()))
        return
    scope = f"tenant {tenant}" if tenant else "all tenants"
    typer.echo(
        f"exported {summary.rows:,} usage records ({scope}, {first.isoformat()} to {last.isoformat()}), "
        f"total {summary.cost_usd} USD, to {out}"
    )
