"""PID 1's duty: reap orphaned grandchildren, without stealing our own children's exit statuses.

A function that backgrounds a process and exits leaves an orphan; the kernel hands it to the
namespace's PID 1, or to the nearest ancestor that asked to be a child subreaper. As a
container's entrypoint the watchdog is PID 1; elsewhere it asks (PR_SET_CHILD_SUBREAPER), so
that the same code runs, and is tested, outside a container. Either way, once the orphan exits
nobody but us can collect it, and without this it stays a zombie for the container's life.

Our own children (functions, http_workers) are waited for one by one, through pidfds or a
waitpid on their pid, often only after their output ended: a `waitpid(-1)` here would take
their exit statuses first and a function's `exit status 3` would read as 0. Each is in
`own_children` from its spawn until it is collected, and is left alone. Between a spawn and
that registration (a spawn on a worker thread) only a zombie that is no session leader is
reaped, as ours all start with setsid; an orphan that made its own session (`setsid cmd &`)
waits for the next scan.

uvloop keeps SIGCHLD for itself in `add_signal_handler`, so a plain Python signal handler
notes the signal and schedules one scan on the loop; scans are at most every SCAN_INTERVAL,
however many functions exit, so that a busy streaming function pays for few of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from types import FrameType

from fwatchdog.process.spawn import own_children, spawns_in_progress

PR_SET_CHILD_SUBREAPER = 36
# Zombies wait at most this long for a scan; a scan costs a few reads of /proc.
SCAN_INTERVAL = 0.05


class Reaper:
    """Collects exited children that are not session leaders, whenever SIGCHLD says some
    child exited."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending = False

    def start(self) -> None:
        """Become the orphans' parent (unless PID 1 already is) and watch for SIGCHLD."""
        if os.getpid() != 1:
            become_subreaper()
        signal.signal(signal.SIGCHLD, self._on_sigchld)
        self._loop.call_soon(self.scan)  # any that exited before the handler

    def _on_sigchld(self, _signum: int, _frame: FrameType | None) -> None:
        # Runs between bytecodes on the main thread: only note it and let the loop do the rest.
        if not self._pending and not self._loop.is_closed():
            self._pending = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: we are exiting
                self._loop.call_soon_threadsafe(self._loop.call_later, SCAN_INTERVAL, self.scan)

    def scan(self) -> None:
        """Reap every exited child that is not one of ours."""
        self._pending = False
        while True:
            try:
                exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return  # no children at all
            if exited is None:
                return  # children, but none exited
            pid = exited.si_pid
            if not _orphan(pid, _session(pid)):
                # Ours, waiting for its own waitpid; waitid would show it first every time,
                # so look at every child instead.
                self._reap_zombies_among(_children())
                return
            self._reap(pid)

    def _reap_zombies_among(self, pids: list[int]) -> None:
        deferred = False
        for pid in pids:
            state, session = _state_and_session(pid)
            if state == "Z" and pid not in own_children:
                if _orphan(pid, session):
                    self._reap(pid)
                else:
                    deferred = True
        if deferred and not self._pending:  # a spawn was registering: look again soon
            self._pending = True
            self._loop.call_later(SCAN_INTERVAL, self.scan)

    def _reap(self, pid: int) -> None:
        # A zombie child's pid cannot be reused before it is reaped, and only we reap it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def start_reaper() -> Reaper:
    """Start reaping orphans on the running loop (the primary watchdog process only)."""
    reaper = Reaper(asyncio.get_running_loop())
    reaper.start()
    return reaper


def become_subreaper() -> None:
    """PR_SET_CHILD_SUBREAPER: orphans below us come to us instead of to PID 1."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(error)}")


def _orphan(pid: int, session: int) -> bool:
    """Whether the exited child `pid` is not ours: not registered, and either in another
    process's session (ours all lead their own) or no spawn is still registering."""
    if pid in own_children:
        return False
    return session != pid or not spawns_in_progress


def _session(pid: int) -> int:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return pid  # gone already (someone waited for it): ask no more of it


def _children() -> list[int]:
    """Our children's pids, from every thread's list (an orphan joins some thread's)."""
    pids: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as listing:
                pids.extend(int(pid) for pid in listing.read().split())
        except OSError:
            continue
    return pids


def _state_and_session(pid: int) -> tuple[str, int]:
    """Fields 3 and 6 of /proc/<pid>/stat (after the command name, which may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return "", pid
    return fields[0].decode(), int(fields[3])
