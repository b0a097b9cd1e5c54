"""Commands that run or prepare the kernel: ``serve``, ``migrate``, ``version``, ``config-docs``."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from heldar import __version__
from heldar.cli import base
from heldar.config import render_reference
from heldar.errors import KernelError


@base.app.command()
def version() -> None:
    """Print the kernel version."""
    base.out.print(__version__)


@base.app.command()
def serve(
    demo: Annotated[bool, typer.Option("--demo", help="Register the demo camera.")] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (HELDAR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (HELDAR_PORT).")] = None,
) -> None:
    """Apply migrations and run the kernel until interrupted."""
    import uvicorn

    from heldar import logs
    from heldar.api.app import create_app

    settings = base.settings_or_exit(demo=demo or None, host=host, port=port)
    logs.configure(settings.log_level, settings.log_format)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=True,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    try:
        server.run()
    except KernelError as exc:  # startup failures: bad ffmpeg, unusable database, ...
        base.fail(exc.message)
    if not server.started:
        raise typer.Exit(1)


@base.app.command()
def migrate() -> None:
    """Apply database migrations and print the current revision."""
    from heldar.db import migrate as migrations
    from heldar.db.engine import create_engine

    settings = base.settings_or_exit()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> str | None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await migrations.upgrade(engine)
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    revision = asyncio.run(run())
    base.out.print(f"database at revision {revision}")


@base.app.command("config-docs")
def config_docs() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    sys.stdout.write(render_reference())
