"""Logging setup: ``text`` or ``json`` lines, every line redacted (SPEC §4 masking)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from heldar.config import LogFormat, LogLevel
from heldar.redaction import redact

# Loggers of libraries we run inside the kernel; their records go through our handler.
_ADOPTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic")


class RedactingFormatter(logging.Formatter):
    """Formats a record (text or JSON) and masks credentials in the final line."""

    def __init__(self, fmt: LogFormat) -> None:
        super().__init__()
        self._fmt_kind = fmt

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        timestamp = datetime.fromtimestamp(record.created, UTC)
        if self._fmt_kind is LogFormat.JSON:
            line = json.dumps(
                {
                    "ts": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": message,
                },
                ensure_ascii=False,
            )
        else:
            stamp = timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            line = f"{stamp} {record.levelname:<7} {record.name}: {message}"
        return redact(line)


def configure(level: LogLevel, fmt: LogFormat) -> None:
    """Send all kernel and adopted library logs to stderr through one redacting handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value.upper())
    for name in _ADOPTED_LOGGERS:
        adopted = logging.getLogger(name)
        adopted.handlers.clear()
        adopted.propagate = True
