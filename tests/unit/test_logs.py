from __future__ import annotations

import json
import logging

from heldar.config import LogFormat
from heldar.logs import RedactingFormatter


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("heldar.test", logging.WARNING, __file__, 1, msg, args, None)


def test_text_lines_are_redacted() -> None:
    line = RedactingFormatter(LogFormat.TEXT).format(
        _record("camera %s down: %s", "lobby", "rtsp://admin:s3cret@192.0.2.7/x")
    )
    assert "s3cret" not in line
    assert "rtsp://***@192.0.2.7/x" in line
    assert "WARNING" in line
    assert "heldar.test" in line


def test_json_lines_are_one_object_and_redacted() -> None:
    try:
        raise RuntimeError("cannot open rtsp://u:s3cret@192.0.2.7/x")
    except RuntimeError:
        import sys

        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = RedactingFormatter(LogFormat.JSON).format(record)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["level"] == "warning"
    assert obj["logger"] == "heldar.test"
    assert obj["ts"].endswith("Z")
    assert "s3cret" not in line
    assert "RuntimeError" in obj["msg"]
