"""A real kernel process (``python -m heldar serve``) for end-to-end tests and benchmarks.

It listens on port 0 and logs the bound port, so parallel runs never race for a port; the
log goes to a file beside the data dir. Readiness is a poll of ``/api/v1/health`` with a
deadline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.support import processes
from tests.support.service import Service

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05
_BOUND = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class KernelServer(Service):
    def __init__(
        self, data_dir: Path, *, demo: bool = False, env: Mapping[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.with_name(data_dir.name + ".log")
        self.demo = demo
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> KernelServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELDAR_")}
        env.update(HELDAR_DATA_DIR=str(self.data_dir), HELDAR_HOST="127.0.0.1", HELDAR_PORT="0")
        env.update(self.extra_env)
        argv = [sys.executable, "-m", "heldar", "serve", *(["--demo"] if self.demo else [])]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log_file:
            self.proc = processes.spawn(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.port is None and (match := _BOUND.search(self.log)):
                self.port = int(match.group(1))
            if self.port is not None and self._healthy():
                return self
            time.sleep(POLL_INTERVAL_S)  # poll interval of a deadline loop
        self.stop()
        raise RuntimeError(f"kernel never became healthy:\n{self.log}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> int | None:
        """SIGTERM (graceful shutdown), SIGKILL the group after a deadline; always reap."""
        if self.proc is None:
            return None
        return processes.stop(self.proc, STOP_TIMEOUT_S)
