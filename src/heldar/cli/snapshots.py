"""``heldar snapshot``, ``heldar schedule ...`` and ``heldar timelapse``."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Column, Table

from heldar.cli import base
from heldar.errors import ConfigError, KernelError
from heldar.media.timelapse import (
    MAX_FPS,
    MAX_TIMELAPSE_FRAMES,
    MIN_FPS,
    EncodedTimelapse,
    encode_timelapse,
    output_size,
)
from heldar.services.grabber import DEFAULT_MAX_AGE_MS
from heldar.services.schedules import SCHEDULE_ID_PATTERN

# Time-lapse (HTTP API client, local ffmpeg) -----------------------------------------

# As the API's defaults: a day before --to, ten snapshots per second of video.
TIMELAPSE_DEFAULT_SPAN = timedelta(hours=24)
TIMELAPSE_DEFAULT_FPS = 10
SNAPSHOT_URL_PREFIX = "/media/snapshots/"


@base.app.command("timelapse")
def timelapse(
    camera_id: Annotated[str, typer.Argument(metavar="CAMERA", help="Camera id.")],
    out_file: Annotated[
        Path, typer.Option("--out", help="MP4 file to write (replaced atomically).")
    ],
    from_: Annotated[
        str | None,
        typer.Option("--from", help="RFC 3339 with a zone, inclusive. Default: --to minus 24 h."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="RFC 3339 with a zone, inclusive. Default: now.")
    ] = None,
    fps: Annotated[
        int, typer.Option(min=MIN_FPS, max=MAX_FPS, help="Snapshots shown per second of video.")
    ] = TIMELAPSE_DEFAULT_FPS,
    api: base.ApiOption = None,
) -> None:
    """Make an H.264 MP4 of a camera's stored snapshots, one frame each, oldest first.

    Lists the snapshots through the kernel's API, downloads them, and encodes them here with
    the local ffmpeg (HELDAR_FFMPEG_BIN, PATH or imageio-ffmpeg).
    """
    from heldar.media import ffmpeg

    camera_id = base.camera_id_arg(camera_id)
    until = _parse_time(to, "--to") if to else datetime.now(UTC)
    since = _parse_time(from_, "--from") if from_ else until - TIMELAPSE_DEFAULT_SPAN
    if since >= until:
        base.fail(f"--from must be earlier than --to ({until.isoformat()})", base.EXIT_USAGE)
    if not out_file.parent.is_dir():
        base.fail(f"--out: directory {out_file.parent} does not exist", base.EXIT_USAGE)
    settings = base.settings_or_exit()
    try:
        ffmpeg_bin = ffmpeg.discover(settings.ffmpeg_bin, settings.ffprobe_bin).ffmpeg
    except ConfigError as exc:
        base.fail(exc.message, base.EXIT_USAGE)
    # The list route answers at most MAX_TIMELAPSE_FRAMES (newest first): a full page may be cut.
    query = urlencode(
        {"from": since.isoformat(), "to": until.isoformat(), "limit": MAX_TIMELAPSE_FRAMES}
    )
    rows: list[dict[str, Any]] = base.request(api, "GET", f"/cameras/{camera_id}/snapshots?{query}")
    if len(rows) >= MAX_TIMELAPSE_FRAMES:
        base.fail(
            f"{len(rows)} or more snapshots of '{camera_id}' in the range; a time-lapse takes "
            f"fewer than {MAX_TIMELAPSE_FRAMES}: narrow the range (--from/--to)",
            base.EXIT_USAGE,
        )
    if not rows:
        base.fail(
            f"camera '{camera_id}' has no snapshots taken between {since.isoformat()} and "
            f"{until.isoformat()}"
        )
    rows.reverse()  # oldest first
    with tempfile.TemporaryDirectory(prefix="heldar-timelapse-") as work:
        frames = _download_snapshots(base.api_base(api), rows, Path(work))
        if not frames:
            base.fail("every snapshot in the range was deleted meanwhile (retention?)")
        encoded = _encode_timelapse(ffmpeg_bin, frames, out_file, fps=fps, label=camera_id)
    base.out.print(
        f"wrote {escape(str(out_file))}: {encoded.frames} frames, "
        f"{encoded.width}x{encoded.height}, {fps} fps, {encoded.duration_s:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


def _parse_time(value: str, option: str) -> datetime:
    """An RFC 3339 / ISO 8601 time that names its zone (``Z`` or an offset)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        base.fail(f"{option}: {value!r} is not a time like 2026-01-02T03:04:05Z", base.EXIT_USAGE)
    if parsed.tzinfo is None:
        base.fail(f"{option}: {value!r} needs a time zone, e.g. {value}Z (UTC)", base.EXIT_USAGE)
    return parsed


def _timelapse_progress() -> Progress:
    return Progress(
        "{task.description:<11}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=base.err,
    )


def _download_snapshots(
    base_url: str, rows: list[dict[str, Any]], work: Path
) -> list[tuple[Path, int, int]]:
    """Fetch each snapshot's JPEG into ``work``; (path, width, height) in order.

    A file gone meanwhile (404: retention deleted it) is left out, with a warning.
    """
    frames: list[tuple[Path, int, int]] = []
    missing = 0
    with (
        _timelapse_progress() as progress,
        httpx.Client(base_url=base_url, timeout=base.API_TIMEOUT_S) as http,
    ):
        task = progress.add_task("downloading", total=len(rows))
        for index, row in enumerate(rows):
            url = str(row["url"])
            if not url.startswith(SNAPSHOT_URL_PREFIX):
                base.fail(f"the kernel answered an unexpected snapshot url {url!r}")
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                base.fail(f"cannot download {url} from {base_url}: {exc}")
            if response.status_code == httpx.codes.NOT_FOUND:
                missing += 1
            elif response.status_code >= httpx.codes.BAD_REQUEST:
                base.fail(f"cannot download {url}: HTTP {response.status_code}")
            else:
                path = work / f"{index:06d}.jpg"
                path.write_bytes(response.content)
                frames.append((path, int(row["width"]), int(row["height"])))
            progress.advance(task)
    if missing:
        base.err.print(f"[yellow]warning:[/yellow] {missing} snapshots were deleted meanwhile")
    return frames


def _encode_timelapse(
    ffmpeg_bin: str, frames: list[tuple[Path, int, int]], out_file: Path, *, fps: int, label: str
) -> EncodedTimelapse:
    """Encode into a temp file beside ``out_file``, then rename it over ``out_file``."""
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{out_file.name}.", suffix=".tmp", dir=out_file.parent
    )
    os.close(fd)
    temp = Path(temp_name)
    try:
        with _timelapse_progress() as progress:
            task = progress.add_task("encoding", total=len(frames))

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            try:
                encoded = asyncio.run(
                    encode_timelapse(
                        ffmpeg_bin,
                        [path for path, _, _ in frames],
                        temp,
                        fps=fps,
                        frame_size=output_size((w, h) for _, w, h in frames),
                        on_progress=on_progress,
                        label=f"time-lapse of camera '{label}'",
                    )
                )
            except KernelError as exc:
                base.fail(exc.message)
        temp.replace(out_file)
    finally:
        temp.unlink(missing_ok=True)
    return encoded


# Snapshots and schedules (HTTP API clients) ------------------------------------------

schedule_app = typer.Typer(no_args_is_help=True, help="Snapshot schedules.")
base.app.add_typer(schedule_app, name="schedule")


@base.app.command("snapshot")
def snapshot(
    camera_id: Annotated[str, typer.Argument(metavar="CAMERA", help="Camera id.")],
    out_file: Annotated[Path, typer.Option("--out", help="JPEG file to write.")],
    max_age_ms: Annotated[
        int,
        typer.Option(
            "--max-age-ms", min=0, help="Take a sampler frame at most this old (0: grab)."
        ),
    ] = DEFAULT_MAX_AGE_MS,
    store: Annotated[
        bool, typer.Option("--store", help="Also keep it as a stored snapshot.")
    ] = False,
    api: base.ApiOption = None,
) -> None:
    """Take a camera's picture now (from its sampler when fresh, else one ffmpeg grab)."""
    camera_id = base.camera_id_arg(camera_id)
    query = urlencode({"max_age_ms": max_age_ms, "store": str(store).lower()})
    response = base.send(api, "GET", f"/cameras/{camera_id}/snapshot?{query}")
    out_file.write_bytes(response.content)
    source = response.headers.get("x-snapshot-source", "?")
    size = f"{response.headers.get('x-snapshot-width')}x{response.headers.get('x-snapshot-height')}"
    stored = response.headers.get("x-snapshot-id")
    note = f", stored as {stored}" if stored else ""
    base.out.print(
        f"wrote {escape(str(out_file))}: {size} from the {source}{note}",
        highlight=False,
        soft_wrap=True,
    )


@schedule_app.command("add")
def schedule_add(
    camera_id: Annotated[str, typer.Argument(metavar="CAMERA", help="Camera id.")],
    every: Annotated[int, typer.Option("--every", help="Interval in seconds (5 to 86400).")],
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    api: base.ApiOption = None,
    as_json: base.JsonOption = False,
) -> None:
    """Take a snapshot of CAMERA every --every seconds, on a fixed grid from now."""
    body = {"interval_seconds": every, "enabled": not disabled}
    created = base.request(
        api, "POST", f"/cameras/{base.camera_id_arg(camera_id)}/snapshot-schedules", body
    )
    if as_json:
        base.out.print_json(data=created)
    else:
        base.out.print(f"added schedule {created['id']}: every {every} s", highlight=False)


@schedule_app.command("list")
def schedule_list(
    camera_id: Annotated[str, typer.Argument(metavar="CAMERA", help="Camera id.")],
    api: base.ApiOption = None,
    as_json: base.JsonOption = False,
) -> None:
    """List a camera's snapshot schedules with their last fire, next fire and last error."""
    rows = base.request(api, "GET", f"/cameras/{base.camera_id_arg(camera_id)}/snapshot-schedules")
    if as_json:
        base.out.print_json(data=rows)
        return
    table = Table(
        Column("id", no_wrap=True),
        Column("every", justify="right", no_wrap=True),
        Column("last fired", no_wrap=True),
        Column("next due", no_wrap=True),
        caption="times in UTC",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    errors: list[str] = []
    for row in rows:
        table.add_row(
            row["id"],
            f"{row['interval_seconds']} s",
            _short_time(row["last_fired_at"]),
            _short_time(row["next_due_at"]) if row["enabled"] else "disabled",
        )
        if row["last_error"]:
            errors.append(f"[red]{row['id']}[/red]: {escape(row['last_error'])}")
    base.out.print(table)
    for line in errors:
        base.out.print(line, soft_wrap=True, highlight=False)


def _short_time(value: str | None) -> str:
    """``MM-DD HH:MM:SS`` (UTC) of an RFC 3339 time from the API; ``-`` for none."""
    if value is None:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%m-%d %H:%M:%S")


@schedule_app.command("rm")
def schedule_rm(schedule_id: str, api: base.ApiOption = None) -> None:
    """Delete a snapshot schedule (its snapshots stay)."""
    base.request(api, "DELETE", f"/snapshot-schedules/{_schedule_id(schedule_id)}")
    base.out.print(f"deleted schedule {schedule_id}", highlight=False)


@schedule_app.command("enable")
def schedule_enable(schedule_id: str, api: base.ApiOption = None) -> None:
    """Enable a schedule: it fires now, then on a new grid."""
    base.request(
        api, "PATCH", f"/snapshot-schedules/{_schedule_id(schedule_id)}", {"enabled": True}
    )
    base.out.print(f"enabled schedule {schedule_id}", highlight=False)


@schedule_app.command("disable")
def schedule_disable(schedule_id: str, api: base.ApiOption = None) -> None:
    """Disable a schedule (kept, not fired)."""
    base.request(
        api, "PATCH", f"/snapshot-schedules/{_schedule_id(schedule_id)}", {"enabled": False}
    )
    base.out.print(f"disabled schedule {schedule_id}", highlight=False)


def _schedule_id(value: str) -> str:
    if not re.match(SCHEDULE_ID_PATTERN, value):
        base.fail(f"schedule id {value!r} must look like snsch_<32 hex>", base.EXIT_USAGE)
    return value
