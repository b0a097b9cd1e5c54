"""A real kernel process (``python -m heldar serve``) for end-to-end tests and benchmarks.

It listens on port 0 and reports the bound port in its log, so parallel runs never race
for a port. Readiness is a poll of ``/api/v1/health`` with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_BOUND = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class KernelServer:
    def __init__(self, data_dir: Path, *, demo: bool = False, env: Mapping[str, str] | None = None):
        self.data_dir = data_dir
        self.demo = demo
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.log_lines: list[str] = []
        self._port_found = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def start(self) -> KernelServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELDAR_")}
        env.update(HELDAR_DATA_DIR=str(self.data_dir), HELDAR_HOST="127.0.0.1", HELDAR_PORT="0")
        env.update(self.extra_env)
        argv = [sys.executable, "-m", "heldar", "serve", *(["--demo"] if self.demo else [])]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._port_found.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kernel did not start listening:\n{self.log}")
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)  # poll interval of a deadline loop, not synchronisation
        self.stop()
        raise RuntimeError(f"kernel never became healthy:\n{self.log}")

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log_lines.append(line.rstrip("\n"))
            if (match := _BOUND.search(line)) and self.port is None:
                self.port = int(match.group(1))
                self._port_found.set()

    def stop(self) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL the group after a deadline; always reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)
        return self.proc.returncode

    def __enter__(self) -> KernelServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
