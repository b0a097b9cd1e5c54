"""``python -m heldar.worker``: the same command as ``heldar worker``."""

import typer

from heldar.cli.worker import worker

typer.run(worker)
