"""A controller for the real RTSP test camera (``scripts/test_camera.py``, SPEC §8).

``RtspTestCamera.start()`` runs the GStreamer server under the system interpreter in its own process
group, waits for its ``READY`` lines, optionally connects one "keeper" reader per mount so each
shared pipeline runs steadily like a real camera, and returns once ffprobe can read every mount.
``stop()`` ends the keepers and the server and reaps them; a later ``start()`` binds the same port,
so a test can simulate an outage and a reader can reconnect to the same URL.

Invariants: every child is started with ``start_new_session=True`` and stopped through
``processes.stop`` (terminate, wait, kill the group, reap). The server also exits when its stdin
(a pipe held by this object) closes, so it does not outlive a test process that died abruptly; a
keeper exits when the server goes away.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.support import processes
from tests.support.binaries import ffmpeg_bin, ffprobe_bin
from tests.support.service import Service

SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "test_camera.py"

# Importing GStreamer and binding the socket take well under a second; the margin is for a loaded
# machine or a first run that rebuilds the GStreamer registry.
READY_TIMEOUT_S = 15.0
# The first reader starts the shared pipeline and waits for an IDR (GOP up to a few seconds).
READABLE_TIMEOUT_S = 20.0
# One ffprobe attempt; its socket I/O timeout is a bit shorter so it gives up on its own first.
PROBE_ATTEMPT_TIMEOUT_S = 8.0
PROBE_IO_TIMEOUT_US = 5_000_000
# Pause between failed readiness probes, so a refused connection does not spin.
PROBE_RETRY_PAUSE_S = 0.1
STOP_GRACE_S = 5.0
STDERR_TAIL_CHARS = 4000

_READY_RE = re.compile(r"^READY (rtsp://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)(?P<path>/\S*))$")


# What ffprobe calls each codec the camera can send.
FFPROBE_CODEC_NAMES = {"h264": "h264", "h265": "hevc"}


class CameraError(RuntimeError):
    """The test camera did not start or did not become readable; the message has its stderr."""


@dataclass(frozen=True)
class StartTimings:
    """How long the last ``start()`` took, measured on the monotonic clock."""

    ready_s: float  # spawn until every READY line was read
    readable_s: float  # spawn until ffprobe read every mount


class RtspTestCamera(Service):
    """A live H.264 RTSP camera on loopback, served by GStreamer, controlled from tests."""

    def __init__(
        self,
        *,
        paths: Sequence[str] = ("/cam",),
        width: int = 640,
        height: int = 360,
        fps: int = 15,
        gop: int | None = None,
        bitrate_kbps: int | None = None,
        preset: str = "ultrafast",
        codec: str = "h264",
        keeper: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        ffmpeg: str | None = None,
        ffprobe: str | None = None,
        python: str = SYSTEM_PYTHON,
        script: Path = CAMERA_SCRIPT,
        ready_timeout_s: float = READY_TIMEOUT_S,
        readable_timeout_s: float = READABLE_TIMEOUT_S,
    ) -> None:
        if not paths:
            raise ValueError("at least one mount path is needed")
        self.paths: tuple[str, ...] = tuple(paths)
        self.width = width
        self.height = height
        self.fps = fps
        self.gop = gop if gop is not None else 2 * fps
        self.bitrate_kbps = bitrate_kbps
        self.preset = preset
        self.codec = codec
        self.keeper = keeper
        self.host = host
        self.ffmpeg = ffmpeg if ffmpeg is not None else ffmpeg_bin()
        self.ffprobe = ffprobe if ffprobe is not None else ffprobe_bin()
        self.python = python
        self.script = script
        self.ready_timeout_s = ready_timeout_s
        self.readable_timeout_s = readable_timeout_s
        self.last_start_timings: StartTimings | None = None
        # 0 until the first start binds a port; every later start reuses it.
        self._port = port
        self._server: subprocess.Popen[bytes] | None = None
        self._server_stderr: IO[bytes] | None = None
        self._keepers: list[subprocess.Popen[bytes]] = []
        self._keeper_stderrs: list[IO[bytes]] = []

    # -- public surface -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port; stays the same across stop() and start()."""
        if self._port == 0:
            raise RuntimeError("the camera has not been started yet, so it has no port")
        return self._port

    @property
    def url(self) -> str:
        """The RTSP URL of the first mount path."""
        return self.url_for(self.paths[0])

    def url_for(self, path: str) -> str:
        if path not in self.paths:
            raise ValueError(f"{path!r} is not one of this camera's mounts {self.paths}")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"rtsp://{host}:{self.port}{path}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def server_pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    @property
    def keeper_pids(self) -> tuple[int, ...]:
        return tuple(keeper.pid for keeper in self._keepers)

    def start(self) -> None:
        """Start the server (and keepers) and return once ffprobe can read every mount."""
        if self._server is not None:
            raise RuntimeError("the camera is already started; stop() it first")
        started_at = time.monotonic()
        try:
            self._spawn_server(started_at + self.ready_timeout_s)
            ready_s = time.monotonic() - started_at
            if self.keeper:
                for path in self.paths:
                    self._spawn_keeper(self.url_for(path))
            deadline = time.monotonic() + self.readable_timeout_s
            for path in self.paths:
                self._wait_readable(self.url_for(path), deadline)
            self._check_keepers()
        except BaseException:
            self.stop()
            raise
        self.last_start_timings = StartTimings(
            ready_s=ready_s, readable_s=time.monotonic() - started_at
        )

    def stop(self) -> None:
        """Stop keepers, then the server; reap everything. Idempotent; the port is kept."""
        keepers, self._keepers = self._keepers, []
        keeper_stderrs, self._keeper_stderrs = self._keeper_stderrs, []
        server, self._server = self._server, None
        server_stderr, self._server_stderr = self._server_stderr, None
        try:
            for keeper in keepers:
                processes.stop(keeper, STOP_GRACE_S)
            if server is not None:
                processes.stop(server, STOP_GRACE_S)
        finally:
            for stream in [*keeper_stderrs, server_stderr]:
                if stream is not None:
                    stream.close()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        self.start()

    def server_stderr(self) -> str:
        """The tail of the server's stderr so far (for failure messages)."""
        return _tail(self._server_stderr)

    # -- internals ------------------------------------------------------------------------------

    def _server_argv(self) -> list[str]:
        argv = [
            self.python,
            str(self.script),
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--width",
            str(self.width),
            "--height",
            str(self.height),
            "--fps",
            str(self.fps),
            "--gop",
            str(self.gop),
            "--preset",
            self.preset,
            "--codec",
            self.codec,
            "--exit-on-stdin-eof",
        ]
        if self.bitrate_kbps is not None:
            argv += ["--bitrate-kbps", str(self.bitrate_kbps)]
        for path in self.paths:
            argv += ["--path", path]
        return argv

    def _spawn_server(self, deadline: float) -> None:
        # Files, not pipes, so a chatty child never blocks; closed by stop().
        self._server_stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._server = processes.spawn(
            self._server_argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._server_stderr,
        )
        lines = self._read_ready_lines(self._server, deadline)
        ports = set()
        for line, path in zip(lines, self.paths, strict=True):
            match = _READY_RE.match(line)
            if match is None or match["path"] != path:
                raise CameraError(self._describe(f"unexpected line from the camera: {line!r}"))
            ports.add(int(match["port"]))
        if len(ports) != 1 or (self._port != 0 and ports != {self._port}):
            raise CameraError(self._describe(f"camera reported ports {ports}, wanted {self._port}"))
        self._port = ports.pop()

    def _read_ready_lines(self, server: subprocess.Popen[bytes], deadline: float) -> list[str]:
        assert server.stdout is not None
        fd = server.stdout.fileno()
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while buffer.count(b"\n") < len(self.paths):
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    raise CameraError(self._describe("no READY line before the deadline"))
                if not selector.select(remaining_s):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    try:
                        code: int | None = server.wait(timeout=STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        code = None
                    raise CameraError(self._describe(f"camera exited (code {code}) before READY"))
                buffer += chunk
        return buffer.decode("utf-8", "replace").splitlines()[: len(self.paths)]

    def _spawn_keeper(self, url: str) -> None:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._keeper_stderrs.append(stderr)
        argv = [
            self.ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ]
        self._keepers.append(
            processes.spawn(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        )

    def _check_keepers(self) -> None:
        for keeper, stderr in zip(self._keepers, self._keeper_stderrs, strict=True):
            if keeper.poll() is not None:
                raise CameraError(
                    self._describe(
                        f"keeper reader exited with code {keeper.returncode}: {_tail(stderr)}"
                    )
                )

    def _probe_argv(self, url: str) -> list[str]:
        return [
            self.ffprobe,
            "-hide_banner",
            "-loglevel",
            "error",
            "-rtsp_transport",
            "tcp",
            "-timeout",
            str(PROBE_IO_TIMEOUT_US),
            # Stream parameters come from the SDP's SPS; reading one packet proves media flows.
            "-probesize",
            "32",
            "-analyzeduration",
            "0",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#1",
            "-show_entries",
            "stream=codec_name,width,height:packet=size",
            "-of",
            "default=noprint_wrappers=1",
            url,
        ]

    def _wait_readable(self, url: str, deadline: float) -> None:
        """Poll ffprobe until it reads a packet of H.264 of the configured size, or fail."""
        expected = {
            "codec_name": {"h264": "h264", "h265": "hevc"}[self.codec],
            "width": str(self.width),
            "height": str(self.height),
        }
        last_failure = "no attempt"
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise CameraError(
                    self._describe(f"ffprobe could not read {url} in time: {last_failure}")
                )
            if self._server is not None and self._server.poll() is not None:
                raise CameraError(
                    self._describe(f"camera exited with code {self._server.returncode}")
                )
            self._check_keepers()  # a keeper that gave up means the mount is broken: fail fast
            try:
                result = subprocess.run(
                    self._probe_argv(url),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=min(remaining_s, PROBE_ATTEMPT_TIMEOUT_S),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                last_failure = "ffprobe timed out"
                continue
            fields = dict(
                line.split("=", 1)
                for line in result.stdout.decode("utf-8", "replace").splitlines()
                if "=" in line
            )
            packet_size = fields.pop("size", "")
            if result.returncode == 0 and fields == expected and packet_size.isdigit():
                return
            last_failure = (
                f"exit {result.returncode}, fields {fields}, "
                f"stderr {result.stderr.decode('utf-8', 'replace').strip()!r}"
            )
            time.sleep(min(PROBE_RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))

    def _describe(self, problem: str) -> str:
        return f"{problem}\n--- test camera stderr ---\n{self.server_stderr()}"


def _tail(stream: IO[bytes] | None) -> str:
    if stream is None:
        return ""
    stream.flush()
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace")
    stream.seek(0, os.SEEK_END)
    return text[-STDERR_TAIL_CHARS:]
