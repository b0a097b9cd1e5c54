"""``heldar samplers``: the AI frame samplers as a table."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Column, Table

from heldar.cli import base

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


@base.app.command("samplers")
def samplers(api: base.ApiOption = None, as_json: base.JsonOption = False) -> None:
    """Show the AI frame samplers: state, granted/requested fps, frame age, errors."""
    rows = base.request(api, "GET", "/ai/samplers")
    if as_json:
        base.out.print_json(data=rows)
        return
    if not rows:
        base.out.print(
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
    base.out.print(table)
    for line in errors:  # ffmpeg messages hold [brackets]: escaped, never read as markup
        base.out.print(line, soft_wrap=True, highlight=False)


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
