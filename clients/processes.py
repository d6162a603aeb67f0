"""Child processes that never outlive their parent: own process group, death signal, orderly stop.

Each child starts in its own session, so a Ctrl-C on the terminal reaches only the parent, which
then stops the children in the order it chooses (e.g. the worker first, so that it can still write
its final snapshot to Redis). On Linux each child also asks the kernel for SIGTERM when its parent
dies (``PR_SET_PDEATHSIG``), so even a parent killed with SIGKILL leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["child_options", "stop_process"]

_PR_SET_PDEATHSIG = 1


def child_options() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments for a child that dies with this process.

    Create children from the main thread: the death signal fires when the *thread* that forked
    them ends.
    """
    options: dict[str, Any] = {"start_new_session": True}
    setup = _death_signal_setup()
    if setup is not None:
        options["preexec_fn"] = setup
    return options


def stop_process(
    process: subprocess.Popen[Any], *, timeout: float, hurry: Callable[[], bool] = lambda: False
) -> int | None:
    """SIGTERM the child's process group, wait up to ``timeout`` s (less once ``hurry()``), then SIGKILL.

    Whatever else is left in the child's group is killed before the child is reaped, while its
    group id cannot yet be reused. Returns the child's exit code.
    """
    if process.returncode is not None:
        return process.returncode
    _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _exited(process) and time.monotonic() < deadline and not hurry():
        time.sleep(0.05)
    _signal_group(process, signal.SIGKILL)
    try:
        return process.wait(10.0)
    except subprocess.TimeoutExpired:
        return None


def _exited(process: subprocess.Popen[Any]) -> bool:
    """Whether the child has exited, without reaping it (its pid and group id stay reserved)."""
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)  # the child leads its own group (start_new_session)


def _death_signal_setup() -> Callable[[], None] | None:
    """A preexec function setting PR_SET_PDEATHSIG on Linux, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return setup
