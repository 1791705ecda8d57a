"""``copilot gateway ...``: run the LLM gateway service.

``serve`` starts uvicorn on ``gateway.service:app_factory`` with the project's
settings. Without ``COPILOT_DATABASE__URL``/``COPILOT_REDIS__URL`` it starts
(or reuses) the embedded PostgreSQL and Redis first and hands their URLs to
the workers through the environment; the schema must be migrated
(``copilot db migrate``, or ``copilot up`` then ``copilot db migrate``).
The routing config is ``--config`` or ``COPILOT_GATEWAY__CONFIG_FILE``;
without one the built-in offline model and local embedder serve every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.config import environment_variable, export_to_children, get_settings
from core.errors import ConfigurationError

app = typer.Typer(help="Run the OpenAI-compatible LLM gateway.", no_args_is_help=True)


@app.command()
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Routing YAML (model aliases → deployments).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 4000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve /v1/chat/completions, /v1/embeddings, /v1/models, /admin and /metrics."""
    settings = get_settings()
    gw = settings.gateway
    if config is not None:
        if not config.is_file():
            raise ConfigurationError(f"routing config {config} does not exist")
        export_to_children("COPILOT_GATEWAY__CONFIG_FILE", str(config.resolve()))
    elif gw.config_file is not None and not gw.config_file.is_file():
        raise ConfigurationError(f"routing config {gw.config_file} (COPILOT_GATEWAY__CONFIG_FILE) does not exist")
    # Fail here, in one line, on a bad routing file rather than in every worker.
    from gateway.routing import load_routing

    load_routing(config or gw.config_file)

    from core.embedded import resolve_services

    urls = resolve_services(settings, start=True)
    export_to_children("COPILOT_DATABASE__URL", urls.database_url)
    if urls.redis_url is not None:
        export_to_children("COPILOT_REDIS__URL", urls.redis_url)
    workers = workers or gw.workers
    if workers > 1 and environment_variable("PROMETHEUS_MULTIPROC_DIR") is None:
        folder = settings.data_dir / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        export_to_children("PROMETHEUS_MULTIPROC_DIR", str(folder))
    get_settings.cache_clear()

    import uvicorn

    bind_host = host or gw.host
    bind_port = port or gw.port
    typer.echo(f"gateway listening on http://{bind_host}:{bind_port} ({workers} worker(s))", err=True)
    uvicorn.run(
        "gateway.service:app_factory",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
