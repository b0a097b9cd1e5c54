"""``heldar camera ...``: manage cameras through the kernel's API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from heldar.cli import base
from heldar.media.urls import Profile, Vendor

camera_app = typer.Typer(no_args_is_help=True, help="Manage cameras (through the kernel's API).")
base.app.add_typer(camera_app, name="camera")


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
    api: base.ApiOption = None,
    as_json: base.JsonOption = False,
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
    camera = base.request(api, "POST", "/cameras", body)
    if as_json:
        base.out.print_json(data=camera)
    else:
        main_url = escape(str(camera["stream_urls"]["main"]))  # "[fe80::1]" is not markup
        base.out.print(f"added camera [bold]{escape(camera['id'])}[/bold]: {main_url}")


@camera_app.command("list")
def camera_list(api: base.ApiOption = None, as_json: base.JsonOption = False) -> None:
    """List cameras."""
    cameras = base.request(api, "GET", "/cameras")
    if as_json:
        base.out.print_json(data=cameras)
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
    base.out.print(table)


@camera_app.command("show")
def camera_show(camera_id: str, api: base.ApiOption = None) -> None:
    """Show one camera (passwords are never shown)."""
    base.out.print_json(
        json.dumps(base.request(api, "GET", f"/cameras/{base.camera_id_arg(camera_id)}"))
    )


@camera_app.command("rm")
def camera_rm(camera_id: str, api: base.ApiOption = None) -> None:
    """Delete a camera, its tasks, schedules and stored snapshots."""
    base.request(api, "DELETE", f"/cameras/{base.camera_id_arg(camera_id)}")
    base.out.print(f"deleted camera {camera_id}")
