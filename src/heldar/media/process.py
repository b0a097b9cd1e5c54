"""The one child-process type: every ffmpeg the kernel runs is a :class:`FfmpegProcess`.

Invariants:

* **Own process group.** The child starts a new session (``start_new_session=True``), so its pid is
  also its process-group id and signals reach ffmpeg and anything it spawned, never the kernel.
* **Always reaped.** :meth:`FfmpegProcess.stop` sends SIGTERM to the group, waits ``grace_s``, then
  SIGKILLs the group (also after a clean exit, for grandchildren), waits for the exit and closes
  every pipe. The work runs in a task owned by the object and shielded from the caller: cancelling
  the task that is inside ``stop()`` (or inside ``async with``) still completes it, then the
  cancellation propagates. ``stop()`` is idempotent.
* **stderr is redacted and bounded.** stderr is drained as it arrives into a :class:`StderrRing`:
  split into whole lines at ``\\n`` or ``\\r``, each line redacted *before* it is stored, oldest
  lines dropped first. A credential is therefore never stored, and trimming can never cut a URL in
  half. ``repr()`` shows a redacted argv; the raw argv is not kept.

Caveats and why the low-level API: ``asyncio.create_subprocess_exec``'s ``Process.wait()`` returns
only once the child has exited *and* every pipe has reported EOF. A stdout pipe paused by flow
control (nobody reads the frames any more) never reports EOF, and an escaped grandchild can hold a
pipe open, so that ``wait()`` can hang after the child is dead. This module therefore drives
``loop.subprocess_exec`` with its own protocol: exit is an event of its own, stderr is fed to the
ring from the protocol callback (no pump task), and ``stop()`` closes the pipes itself.

Callers must end every process with ``stop()`` or ``async with``; reading ``stdout`` to EOF and
``wait()`` alone do not release the pipes.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import re
import signal
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from heldar.errors import Unavailable
from heldar.redaction import redact

__all__ = [
    "DEFAULT_STDERR_LIMIT_BYTES",
    "DEFAULT_STDOUT_LIMIT_BYTES",
    "DEFAULT_STOP_GRACE_S",
    "FfmpegProcess",
    "StderrRing",
]

_log = logging.getLogger(__name__)

# ffmpeg finalises its output (trailer, last segment) on SIGTERM; a few seconds is plenty for that,
# and short enough that a hung network read does not hold a shutdown.
DEFAULT_STOP_GRACE_S = 5.0
# The stderr tail that events and errors carry (SPEC §5: "at most 8 KiB").
DEFAULT_STDERR_LIMIT_BYTES = 8192
# A line may take half the tail; below 256 bytes that half cannot hold one ffmpeg error message.
MIN_STDERR_LIMIT_BYTES = 256
# StreamReader limit for stdout: readuntil() fails on a chunk larger than this (a full-HD JPEG
# fits), and reading from the pipe pauses while twice this is buffered.
DEFAULT_STDOUT_LIMIT_BYTES = 4 * 1024 * 1024
# After the group is dead, how long stop() waits for the last stderr bytes; only a grandchild that
# left the group (setsid) can hold the pipe open longer, and then the tail is taken as it is.
STDERR_DRAIN_TIMEOUT_S = 1.0

TRUNCATION_MARK = " [...]"
_LINE_BREAK = re.compile(r"(\r\n?|\n)")
_TRAILING_TOKEN = re.compile(r"\S+\Z")


class StderrRing:
    """A redacted, bounded tail of a child's stderr, fed with raw bytes.

    Bytes are decoded incrementally (invalid UTF-8 becomes U+FFFD) and split into lines at ``\\n``,
    ``\\r`` or ``\\r\\n``. Each whole line is redacted before it is stored, so a URL is never split
    between two stored pieces. A line ended by a lone ``\\r`` (ffmpeg's progress line) is replaced
    by the next line, as on a terminal, so progress does not push the errors out. The stored lines,
    joined with ``\\n``, stay within ``limit_bytes`` (UTF-8); the oldest lines go first. A line
    longer than half the limit is stored truncated, cut before the token that crosses the cut, so
    one runaway line cannot push out every line before it; the text still pending (an unterminated
    line) is bounded the same way.
    """

    def __init__(
        self,
        limit_bytes: int = DEFAULT_STDERR_LIMIT_BYTES,
        line_hook: Callable[[str], str | None] | None = None,
    ) -> None:
        """``line_hook`` sees each whole (redacted) line first and returns what to store:
        the line, an edited line, or None to keep it out of the tail (e.g. parsed info lines)."""
        if limit_bytes < MIN_STDERR_LIMIT_BYTES:
            raise ValueError(f"limit_bytes must be >= {MIN_STDERR_LIMIT_BYTES}, got {limit_bytes}")
        self._limit_bytes = limit_bytes
        self._max_line_bytes = limit_bytes // 2
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lines: deque[str] = deque()
        self._stored_bytes = 0  # sum over lines of (UTF-8 size + 1 separator)
        self._last_is_progress = False  # last stored line ended with a lone \r
        self._pending = ""  # raw (unredacted) start of the current line; never read out
        self._skipping = False  # rest of an overlong line whose head is already stored
        self._line_hook = line_hook

    @property
    def limit_bytes(self) -> int:
        return self._limit_bytes

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream."""
        self._take(self._decoder.decode(data))

    def close(self) -> None:
        """End of stream: an unterminated last line counts as a line."""
        self._take(self._decoder.decode(b"", final=True))
        self._end_line("\n")

    def text(self) -> str:
        """The stored tail, redacted (again: redaction is idempotent), lines joined with ``\\n``."""
        return redact("\n".join(self._lines))

    def _take(self, text: str) -> None:
        parts = _LINE_BREAK.split(text)
        # split() with a capture group alternates text and line breaks: [text, br, text, br, text].
        for index, part in enumerate(parts):
            if index % 2:
                self._end_line(part)
            elif part:
                self._extend(part)

    def _extend(self, piece: str) -> None:
        if self._skipping:
            return
        self._pending += piece
        if len(self._pending) > self._max_line_bytes:
            # Store what fits now; only whole tokens, so a URL cut here cannot leak its password.
            budget = self._max_line_bytes - len(TRUNCATION_MARK)
            head = _TRAILING_TOKEN.sub("", self._pending[:budget])
            self._store(redact(head).rstrip() + TRUNCATION_MARK, progress=False)
            self._pending = ""
            self._skipping = True

    def _end_line(self, line_break: str) -> None:
        progress = line_break == "\r"
        if self._skipping:
            self._skipping = False
        elif self._pending:
            line: str | None = redact(self._pending)
            if self._line_hook is not None and line is not None:
                line = self._line_hook(line)
            if line is not None:
                self._store(line, progress=progress)
        elif not progress:
            # An empty line (the \n of "progress\r\n", or a blank line) commits a progress line.
            self._last_is_progress = False
        self._pending = ""

    def _store(self, line: str, *, progress: bool) -> None:
        if self._last_is_progress:
            self._stored_bytes -= len(self._lines.pop().encode()) + 1
        encoded = line.encode()
        if len(encoded) > self._max_line_bytes:
            # Cutting redacted text reveals nothing; drop a split UTF-8 sequence at the cut.
            keep = encoded[: self._max_line_bytes - len(TRUNCATION_MARK)]
            line = keep.decode(errors="ignore") + TRUNCATION_MARK
            encoded = line.encode()
        self._lines.append(line)
        self._stored_bytes += len(encoded) + 1
        self._last_is_progress = progress
        while self._stored_bytes > self._limit_bytes:
            self._stored_bytes -= len(self._lines.popleft().encode()) + 1


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Feeds stdout to a StreamReader and stderr to the ring; reports exit and pipe closure."""

    def __init__(self, ring: StderrRing, stdout: asyncio.StreamReader | None) -> None:
        self.ring = ring
        self.stdout = stdout
        self.exited = asyncio.Event()  # the child exited (it is reaped by the child watcher)
        self.stderr_closed = asyncio.Event()
        self.finished = asyncio.Event()  # exited and every pipe closed: the transport is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.stdout is not None and isinstance(transport, asyncio.SubprocessTransport):
            pipe = transport.get_pipe_transport(1)
            if pipe is not None:  # flow control: the pipe pauses while the reader is full
                self.stdout.set_transport(pipe)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1 and self.stdout is not None:
            self.stdout.feed_data(data)
        elif fd == 2:
            self.ring.feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1 and self.stdout is not None:
            if exc is None:
                self.stdout.feed_eof()
            else:
                self.stdout.set_exception(exc)
        elif fd == 2:
            self.ring.close()
            self.stderr_closed.set()

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set()


class FfmpegProcess:
    """A child process in its own process group, with a redacted stderr tail; see the module doc.

    Create it with :meth:`start`, end it with :meth:`stop` or ``async with``::

        async with await FfmpegProcess.start(argv, label="cam 3 sub") as proc:
            frame = await proc.stdout.readuntil(JPEG_EOI)
    """

    def __init__(
        self,
        *,
        label: str,
        argv_redacted: tuple[str, ...],
        transport: asyncio.SubprocessTransport,
        protocol: _ChildProtocol,
    ) -> None:
        """Internal: use :meth:`start`."""
        self._label = label
        self._argv_redacted = argv_redacted
        self._transport = transport
        self._protocol = protocol
        self._pid = transport.get_pid()
        self._stopping: asyncio.Task[int] | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        label: str,
        capture_stdout: bool = True,
        stderr_limit_bytes: int = DEFAULT_STDERR_LIMIT_BYTES,
        stdout_limit_bytes: int = DEFAULT_STDOUT_LIMIT_BYTES,
        stderr_line_hook: Callable[[str], str | None] | None = None,
        stdin_fd: int | None = None,
        stdout_fd: int | None = None,
        nice: int = 0,
    ) -> Self:
        """Spawn ``argv`` (no shell); stdin is /dev/null, stdout a pipe if ``capture_stdout``.

        ``stderr_line_hook``: see :class:`StderrRing` (it runs in the event loop: keep it cheap).
        ``stdin_fd`` / ``stdout_fd``: a file descriptor for the child's stdin / stdout instead
        (the ends of a pipe between two children); the caller keeps and closes its own copy.
        ``stdout_fd`` excludes ``capture_stdout``. ``nice``: lower the child's CPU priority by
        this much, right after the spawn (no ``preexec_fn``, which is unsafe with threads).

        Raises :class:`~heldar.errors.Unavailable` (message redacted, naming the binary) when the
        program cannot be spawned.
        """
        if not argv:
            raise ValueError("argv must name a program")
        if stdout_fd is not None:
            capture_stdout = False
        program, *args = argv
        ring = StderrRing(stderr_limit_bytes, stderr_line_hook)
        stdout = asyncio.StreamReader(limit=stdout_limit_bytes) if capture_stdout else None
        stdout_target = asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL
        if stdout_fd is not None:
            stdout_target = stdout_fd
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ChildProtocol(ring, stdout),
                program,
                *args,
                stdin=asyncio.subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                stdout=stdout_target,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise Unavailable(
                f"cannot start {program!r} for {label}: {reason}. "
                "Check that it is installed and on PATH, or configure its full path."
            ) from err
        proc = cls(
            label=label,
            argv_redacted=tuple(redact(arg) for arg in argv),
            transport=transport,
            protocol=protocol,
        )
        if nice:
            with contextlib.suppress(OSError):  # it may have exited already
                os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + nice)
        _log.debug("started %r", proc)
        return proc

    @property
    def label(self) -> str:
        return self._label

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process-group id."""
        return self._pid

    @property
    def pids(self) -> tuple[int]:
        """The same pid, as the one member of this "pipeline" (see FfmpegPipeline.pids)."""
        return (self._pid,)

    @property
    def returncode(self) -> int | None:
        """None while running; negative for a signal (``-9`` after SIGKILL)."""
        return self._transport.get_returncode()

    @property
    def stdout(self) -> asyncio.StreamReader:
        """The child's stdout (EOF after :meth:`stop`); raises if ``capture_stdout=False``."""
        if self._protocol.stdout is None:
            raise RuntimeError(f"{self._label}: stdout was not captured (capture_stdout=False)")
        return self._protocol.stdout

    def stderr_tail(self) -> str:
        """The latest stderr lines, redacted, at most ``stderr_limit_bytes`` (UTF-8)."""
        return self._protocol.ring.text()

    def failure_reason(self) -> str:
        """The last non-blank stderr line (redacted), else the exit code: why the run ended."""
        lines = [line.strip() for line in self.stderr_tail().splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return f"ffmpeg exited with code {self.returncode}"

    async def wait(self) -> int:
        """Wait until the child exits and return its returncode.

        Read stdout meanwhile (or start with ``capture_stdout=False``): a child blocked on a full
        stdout pipe does not exit. The pipes stay open until :meth:`stop`.
        """
        await self._protocol.exited.wait()
        return self._exit_code()

    async def stop(self, grace_s: float = DEFAULT_STOP_GRACE_S) -> int:
        """Terminate the group (SIGTERM, ``grace_s``, SIGKILL), reap the child, close the pipes.

        Returns the returncode. Safe to call at any time and more than once: later and concurrent
        calls wait for the first one (and its ``grace_s``). If the calling task is cancelled, the
        cleanup still runs to the end before the cancellation is re-raised.
        """
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._shutdown(grace_s), name=f"stop {self._label}"
            )
        stopping = self._stopping
        cancelled: asyncio.CancelledError | None = None
        while not stopping.done():
            try:
                await asyncio.shield(stopping)
            except asyncio.CancelledError as exc:
                if stopping.cancelled():  # the cleanup task itself was cancelled (loop teardown)
                    raise
                cancelled = exc  # our caller was cancelled: finish the cleanup first
        if cancelled is not None:
            raise cancelled
        return stopping.result()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return redact(
            f"<FfmpegProcess {self._label!r} pid={self._pid} {self._state()} "
            f"argv={list(self._argv_redacted)!r}>"
        )

    def _state(self) -> str:
        returncode = self.returncode
        if self._stopping is not None and not self._stopping.done():
            return "stopping"
        if returncode is None:
            return "running"
        return f"{'stopped' if self._stopping is not None else 'exited'} returncode={returncode}"

    def _exit_code(self) -> int:
        returncode = self._transport.get_returncode()
        if returncode is None:  # exited is set only after the transport records the code
            raise RuntimeError(f"{self._label}: no returncode after exit")
        return returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # no member of the group is left
            os.killpg(self._pid, sig)

    async def _shutdown(self, grace_s: float) -> int:
        exited = self._protocol.exited
        if not exited.is_set():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await exited.wait()
            if not exited.is_set():
                _log.warning(
                    "%s (pid %d) still running %.1f s after SIGTERM; killing its process group",
                    self._label,
                    self._pid,
                    grace_s,
                )
        # Also after a clean exit: grandchildren may still be alive in the group.
        self._signal_group(signal.SIGKILL)
        if not exited.is_set():
            # The child may have left its group; it is not reaped yet, so its pid is still its own.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
        await exited.wait()  # SIGKILL cannot be ignored; the child watcher reaps it
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STDERR_DRAIN_TIMEOUT_S):
                await self._protocol.stderr_closed.wait()
        # Close our ends: a paused stdout pipe (frames nobody read) never sees EOF by itself.
        self._transport.close()
        await self._protocol.finished.wait()
        returncode = self._exit_code()
        _log.debug("stopped %r", self)
        return returncode
