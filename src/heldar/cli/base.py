"""Shared parts of the ``heldar`` command line: the app, consoles, errors, the API client.

Resource commands are HTTP clients of a running kernel (``--api``, default from
HELDAR_HOST/HELDAR_PORT): every change goes through the kernel's validation and takes effect
at once.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from heldar.config import Settings, load_settings
from heldar.errors import ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Heldar camera media kernel.")

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


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(exc.message, EXIT_USAGE)


# The API client ---------------------------------------------------------------------


def api_base(api: str | None) -> str:
    if api:
        return api.rstrip("/")
    settings = settings_or_exit()
    host = settings.host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    except ValueError:
        pass
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def send(api: str | None, method: str, path: str, body: Any = None) -> httpx.Response:
    """One API call; exits with the kernel's error message on failure."""
    base = api_base(api)
    try:
        response = httpx.request(method, f"{base}/api/v1{path}", json=body, timeout=API_TIMEOUT_S)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the kernel at {base} ({exc}); is `heldar serve` running? (--api)")
    if response.status_code >= 400:
        try:
            payload = response.json()
            message = payload.get("error") or response.text
        except ValueError:
            message = response.text
        fail(f"{message} (HTTP {response.status_code})")
    return response


def request(api: str | None, method: str, path: str, body: Any = None) -> Any:
    """One API call answering JSON (or 204: None)."""
    response = send(api, method, path, body)
    return None if response.status_code == 204 else response.json()


def camera_id_arg(camera_id: str) -> str:
    from heldar.ids import SLUG_RULE, is_slug

    if not is_slug(camera_id):
        fail(f"camera id {camera_id!r} {SLUG_RULE}", EXIT_USAGE)
    return camera_id
