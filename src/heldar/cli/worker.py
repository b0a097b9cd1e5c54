"""``heldar worker``: run the reference AI worker against a kernel until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from heldar.cli import base
from heldar.config import LogFormat, LogLevel

TaskTypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--task-type",
        help="Task type to lease (repeatable). Default: every analyser of this worker.",
        show_default=False,
    ),
]


@base.app.command("worker")
def worker(
    api: base.ApiOption = None,
    worker_id: Annotated[
        str | None,
        typer.Option("--worker-id", help="Lease owner id. Default: <hostname>-<pid>."),
    ] = None,
    task_types: TaskTypeOption = None,
    max_tasks: Annotated[
        int | None, typer.Option("--max-tasks", help="Hold at most this many tasks (1-512).")
    ] = None,
    ttl: Annotated[
        int, typer.Option("--ttl", help="Lease time to live in seconds (15-300); renewed at 1/3.")
    ] = 60,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Log level.")] = LogLevel.INFO,
) -> None:
    """Run the reference AI worker: lease tasks, analyse frames, post detections."""
    from heldar import logs
    from heldar.worker import analysers, runner

    try:
        analysers.require_dependencies()
    except analysers.MissingDependency as exc:
        base.fail(str(exc))
    unknown = sorted(set(task_types or ()) - set(analysers.ANALYSERS))
    if unknown:
        known = ", ".join(sorted(analysers.ANALYSERS))
        base.fail(
            f"unknown task type(s) {', '.join(unknown)}; this worker has: {known}", base.EXIT_USAGE
        )
    try:
        instance = runner.Worker(
            base.api_base(api),
            worker_id or runner.default_worker_id(),
            task_types=task_types or None,
            max_tasks=max_tasks,
            ttl_s=ttl,
        )
    except runner.WorkerOptionError as exc:
        base.fail(str(exc), base.EXIT_USAGE)
    logs.configure(log_level, LogFormat.TEXT)
    # httpx logs every request at INFO (httpcore every step at DEBUG): a line per frame and
    # task. The worker logs transitions and counters instead.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        runner.run_until_signalled(instance)
    except Exception:
        logging.getLogger("heldar.worker").exception("worker failed")
        raise typer.Exit(1) from None
