"""The ``heldar`` command line.

``serve`` and ``migrate`` work on the local database; the resource commands
(``camera ...``) talk to a running kernel over its HTTP API, so every change goes
through the same validation and takes effect at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from heldar import __version__
from heldar.config import Settings, load_settings, render_reference
from heldar.errors import ConfigError, KernelError
from heldar.media.urls import Profile, Vendor

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Heldar camera media kernel.")
camera_app = typer.Typer(no_args_is_help=True, help="Manage cameras (through the kernel's API).")
app.add_typer(camera_app, name="camera")

out = Console()
err = Console(stderr=True)

API_TIMEOUT_S = 30.0
EXIT_USAGE = 2

ApiOption = Annotated[
    str | None,
    typer.Option("--api", help="Kernel base URL. Default: from HELDAR_HOST/HELDAR_PORT."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def main() -> None:
    app()


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        _fail(exc.message, EXIT_USAGE)


@app.command()
def version() -> None:
    """Print the kernel version."""
    out.print(__version__)


@app.command()
def serve(
    demo: Annotated[bool, typer.Option("--demo", help="Register the demo camera.")] = False,
    host: Annotated[str | None, typer.Option(help="Listen address (HELDAR_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (HELDAR_PORT).")] = None,
) -> None:
    """Apply migrations and run the kernel until interrupted."""
    import uvicorn

    from heldar import logs
    from heldar.api.app import create_app

    settings = _settings(demo=demo or None, host=host, port=port)
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
        _fail(exc.message)
    if not server.started:
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply database migrations and print the current revision."""
    from heldar.db import migrate as migrations
    from heldar.db.engine import create_engine

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> str | None:
        engine = create_engine(settings.resolved_database_url)
        try:
            await migrations.upgrade(engine)
            return await migrations.current_revision(engine)
        finally:
            await engine.dispose()

    revision = asyncio.run(run())
    out.print(f"database at revision {revision}")


@app.command("config-docs")
def config_docs() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    sys.stdout.write(render_reference())


# Camera commands (HTTP API clients) -------------------------------------------------


def _api_base(api: str | None) -> str:
    if api:
        return api.rstrip("/")
    settings = _settings()
    host = settings.host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    except ValueError:
        pass
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _request(api: str | None, method: str, path: str, body: Any = None) -> Any:
    base = _api_base(api)
    try:
        response = httpx.request(method, f"{base}/api/v1{path}", json=body, timeout=API_TIMEOUT_S)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the kernel at {base} ({exc}); is `heldar serve` running? (--api)")
    if response.status_code >= 400:
        try:
            payload = response.json()
            message = payload.get("error") or response.text
        except ValueError:
            message = response.text
        _fail(f"{message} (HTTP {response.status_code})")
    return None if response.status_code == 204 else response.json()


@camera_app.command("add")
def camera_add(
    name: Annotated[str, typer.Argument(help="Display name.")],
    camera_id: Annotated[
        str | None, typer.Option("--id", help="Slug; from NAME if omitted.")
    ] = None,
    vendor: Annotated[Vendor, typer.Option(help="URL template.")] = Vendor.GENERIC,
    address: Annotated[str | None, typer.Option(help="Host name or IP.")] = None,
    rtsp_port: Annotated[int | None, typer.Option("--rtsp-port")] = None,
    channel: Annotated[int | None, typer.Option()] = None,
    username: Annotated[str | None, typer.Option()] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    main_url: Annotated[str | None, typer.Option("--main-url", help="Explicit main URL.")] = None,
    sub_url: Annotated[str | None, typer.Option("--sub-url", help="Explicit sub URL.")] = None,
    record_stream: Annotated[Profile | None, typer.Option("--record-stream")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher is served first.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled.")] = False,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a camera."""
    body: dict[str, Any] = {
        "id": camera_id,
        "name": name,
        "vendor": vendor.value,
        "address": address,
        "rtsp_port": rtsp_port,
        "channel": channel,
        "username": username,
        "main_stream_url": main_url,
        "sub_stream_url": sub_url,
        "record_stream": record_stream.value if record_stream else None,
        "priority": priority,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if disabled:
        body["enabled"] = False
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\r\n")
    camera = _request(api, "POST", "/cameras", body)
    if as_json:
        out.print_json(data=camera)
    else:
        main_url = escape(str(camera["stream_urls"]["main"]))  # "[fe80::1]" is not markup
        out.print(f"added camera [bold]{escape(camera['id'])}[/bold]: {main_url}")


@camera_app.command("list")
def camera_list(api: ApiOption = None, as_json: JsonOption = False) -> None:
    """List cameras."""
    cameras = _request(api, "GET", "/cameras")
    if as_json:
        out.print_json(data=cameras)
        return
    table = Table("id", "name", "vendor", "enabled", "priority", "main stream")
    for cam in cameras:
        table.add_row(
            escape(cam["id"]),
            escape(cam["name"]),
            cam["vendor"],
            "yes" if cam["enabled"] else "no",
            str(cam["priority"]),
            escape(cam["stream_urls"]["main"] or "-"),
        )
    out.print(table)


@camera_app.command("show")
def camera_show(camera_id: str, api: ApiOption = None) -> None:
    """Show one camera (passwords are never shown)."""
    out.print_json(json.dumps(_request(api, "GET", f"/cameras/{_path_id(camera_id)}")))


@camera_app.command("rm")
def camera_rm(camera_id: str, api: ApiOption = None) -> None:
    """Delete a camera, its tasks, schedules and stored snapshots."""
    _request(api, "DELETE", f"/cameras/{_path_id(camera_id)}")
    out.print(f"deleted camera {camera_id}")


# Sampler status (HTTP API client) -------------------------------------------------

_STATE_STYLE = {
    "sampling": "green",
    "connecting": "cyan",
    "budget_exhausted": "magenta",
    "stalled": "red",
    "offline": "red",
    "error": "bold red",
    "stopped": "dim",
}
_MS_PER_S = 1000
_S_PER_MIN = 60


@app.command("samplers")
def samplers(api: ApiOption = None, as_json: JsonOption = False) -> None:
    """Show the AI frame samplers: state, granted/requested fps, frame age, errors."""
    rows = _request(api, "GET", "/ai/samplers")
    if as_json:
        out.print_json(data=rows)
        return
    if not rows:
        out.print(
            "no samplers: no enabled camera has an enabled AI task "
            "(POST /api/v1/cameras/{id}/ai-tasks)",
            highlight=False,
        )
        return
    # Short columns never wrap; a long camera id folds. Errors go below the table, in full.
    table = Table(
        Column("camera", overflow="fold", min_width=10),
        Column("profile", no_wrap=True),
        Column("state", no_wrap=True),
        Column("fps", justify="right", no_wrap=True),
        Column("width", justify="right", no_wrap=True),
        Column("age", justify="right", no_wrap=True),
        Column("frames", justify="right", no_wrap=True),
        Column("restarts", justify="right", no_wrap=True),
        caption="fps: granted/requested (the budget may grant less)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    errors: list[str] = []
    for row in rows:
        state = str(row["state"])
        table.add_row(
            escape(row["camera_id"]),
            escape(row["profile"]),
            f"[{_STATE_STYLE.get(state, 'default')}]{escape(state)}[/]",
            f"{_fps(row['fps'])}/{_fps(row['requested_fps'])}",
            str(row["width"]),
            _age(row["frame_age_ms"]),
            str(row["frames_total"]),
            str(row["restarts"]),
        )
        if row.get("last_error"):
            label = f"{row['camera_id']}/{row['profile']}"
            errors.append(f"[red]{escape(label)}[/red]: {escape(str(row['last_error']))}")
    out.print(table)
    for line in errors:  # ffmpeg messages hold [brackets]: escaped, never read as markup
        out.print(line, soft_wrap=True, highlight=False)


def _fps(value: float | None) -> str:
    return "-" if value is None else f"{round(value, 2):g}"


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < _MS_PER_S:
        return f"{ms} ms"
    seconds = ms / _MS_PER_S
    if seconds < _S_PER_MIN:
        return f"{seconds:.1f} s"
    return f"{seconds / _S_PER_MIN:.1f} min"


def _path_id(camera_id: str) -> str:
    from heldar.ids import SLUG_RULE, is_slug

    if not is_slug(camera_id):
        _fail(f"camera id {camera_id!r} {SLUG_RULE}", EXIT_USAGE)
    return camera_id
