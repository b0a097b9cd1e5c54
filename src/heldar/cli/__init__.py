"""The ``heldar`` command line.

``serve`` and ``migrate`` work on the local database; the resource commands (``camera``,
``samplers``, ``snapshot``, ``schedule``, ``timelapse``) talk to a running kernel over its HTTP
API, so every change goes through the same validation and takes effect at once.
"""

from heldar.cli import cameras, samplers, server, snapshots, worker
from heldar.cli.base import app, main

__all__ = ["app", "cameras", "main", "samplers", "server", "snapshots", "worker"]
