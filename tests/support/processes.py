"""Child processes for test fixtures: each in its own process group, always reaped.

``spawn`` starts a command as the leader of a new session (so its process group id is its pid), and
``stop`` ends it: SIGTERM to the group, wait up to a grace period, SIGKILL to the group, reap.
The group is signalled only while the leader is unreaped (alive or a zombie), because only then is
the group id still guaranteed to be ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any

# Poll interval bounds while waiting for a process to exit without reaping it.
_EXIT_POLL_MIN_S = 0.005
_EXIT_POLL_MAX_S = 0.05


def spawn(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session and process group; ``popen_kwargs`` go to Popen."""
    return subprocess.Popen(list(argv), start_new_session=True, **popen_kwargs)


def _wait_exited_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` exits, leaving it unreaped; False if it still runs at the deadline."""
    deadline = time.monotonic() + timeout_s
    delay_s = _EXIT_POLL_MIN_S
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped elsewhere
        if info is not None:
            return True
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            return False
        time.sleep(min(delay_s, remaining_s))
        delay_s = min(delay_s * 2, _EXIT_POLL_MAX_S)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> int:
    """Terminate ``proc``'s process group, kill it after ``grace_s``, reap; return the exit code.

    Safe to call more than once and on a process that already exited. Closes the pipes Popen opened.
    """
    try:
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            _wait_exited_unreaped(proc.pid, grace_s)
            # The leader has exited (or overstayed): clear out anything left in its group while the
            # unreaped leader still pins the group id, then reap.
            _signal_group(proc.pid, signal.SIGKILL)
        return proc.wait()
    finally:
        streams: tuple[IO[bytes] | None, ...] = (proc.stdin, proc.stdout, proc.stderr)
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
