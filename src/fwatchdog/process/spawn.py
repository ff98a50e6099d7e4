"""Starting a function process, waiting for it without blocking, and killing all of it.

Processes start through `os.posix_spawn` (vfork + exec; uvloop's own spawn forks, and
`subprocess.Popen` spends much more in Python), each in a new session so
that `exec_timeout` can kill the function together with anything it started. Exit is
awaited through a pidfd on the event loop: no thread, no SIGCHLD handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from fwatchdog.process.pipes import PipeReader, enlarge_pipe
from fwatchdog.telemetry.logs import LineSplitter, Log

PR_SET_PDEATHSIG = 1
STDIN_PREFILL_MAX = 64 * 1024  # a new pipe holds 64 KiB: writing this much never blocks
# Python ignores SIGPIPE (and SIGXFSZ); a function must get the defaults, as with Popen.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


# Every child the watchdog started and has not collected: the reaper leaves these to their own
# waits and reaps any other child that exits (an orphan handed to us). A spawn in progress
# holds a token here until its pid is registered (spawns may run on worker threads).
own_children: set[int] = set()
spawns_in_progress: set[object] = set()


class SpawnError(Exception):
    """The function could not be started; the message names the program and the reason."""


def describe_exit(returncode: int) -> str:
    """Go's wording: `exit status 1`, `signal: killed`."""
    if returncode >= 0:
        return f"exit status {returncode}"
    signum = -returncode
    names = {
        signal.SIGKILL: "killed",
        signal.SIGTERM: "terminated",
        signal.SIGSEGV: "segmentation fault",
    }
    try:
        name = names.get(signal.Signals(signum), signal.Signals(signum).name)
    except ValueError:
        name = str(signum)
    return f"signal: {name}"


def find_on_path(name: str) -> str | None:
    """`shutil.which` for a command name: importing shutil (for bz2 and lzma) costs 0.6 MiB of
    resident memory for the whole life of the watchdog."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


class Program:
    """The function's executable, looked up on PATH once and again only when it vanishes."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.name = self.argv[0]
        self._path: str | None = None

    def path(self, refresh: bool = False) -> str | None:
        if self._path is None or refresh:
            if "/" in self.name:
                self._path = self.name
            else:
                self._path = find_on_path(self.name)
        return self._path


class FunctionProcess:
    """One running function: the parent ends of its pipes, its exit status, how to stop it."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> None:
        own_children.add(pid)  # the reaper leaves it to its own wait
        self.pid = pid
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd = stderr_fd
        self.returncode: int | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pidfd = -1

    @classmethod
    def spawn(
        cls,
        program: Program,
        env: Mapping[str, str],
        stdin_data: bytes | None = None,
        die_with_watchdog: bool = False,
        stderr_to_stdout: bool = False,
    ) -> FunctionProcess:
        """Start the program with three pipes; raises SpawnError with a message for the client.

        `posix_spawn` (glibc: clone with CLONE_VFORK) in a new session, so that a timeout can
        kill the whole group. Our ends of the pipes are plain non-blocking descriptors that
        we own; every other descriptor of ours is close-on-exec. With `stdin_data` (at most
        STDIN_PREFILL_MAX bytes: a whole small body), stdin is filled and closed before the
        process starts, and `stdin_fd` is -1. With `die_with_watchdog` (long-lived processes)
        the kernel kills the process if the watchdog itself dies, even by SIGKILL: in its own
        session nothing else would ever stop it. With `stderr_to_stdout` (combine_output) both
        go into the stdout pipe, interleaved as written, and the stderr pipe just ends.
        """
        path = program.path()
        if path is None:
            raise SpawnError(spawn_failure_message(program.name, FileNotFoundError()))
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        if stdin_data is None:
            enlarge_pipe(stdin_w)
        elif stdin_data:
            os.write(stdin_w, stdin_data)  # fits: the pipe is empty and larger
        actions = [
            (os.POSIX_SPAWN_DUP2, stdin_r, 0),
            (os.POSIX_SPAWN_DUP2, stdout_w, 1),
            (os.POSIX_SPAWN_DUP2, stdout_w if stderr_to_stdout else stderr_w, 2),
        ]
        start = _fork_exec_dying_with_parent if die_with_watchdog else _posix_spawn
        spawning = object()  # until the new process is registered (FunctionProcess.__init__)
        spawns_in_progress.add(spawning)
        try:
            try:
                pid = _start(start, path, program, env, actions)
            except OSError as error:
                for fd in (stdin_r, stdin_w, stdout_r, stdout_w, stderr_r, stderr_w):
                    os.close(fd)
                raise SpawnError(spawn_failure_message(program.name, error)) from None
            os.close(stdin_r)
            os.close(stdout_w)
            os.close(stderr_w)
            if stdin_data is not None:
                os.close(stdin_w)
                stdin_w = -1
            else:
                fcntl.fcntl(stdin_w, fcntl.F_SETFL, os.O_NONBLOCK)
            fcntl.fcntl(stdout_r, fcntl.F_SETFL, os.O_NONBLOCK)
            fcntl.fcntl(stderr_r, fcntl.F_SETFL, os.O_NONBLOCK)
            return cls(pid, stdin_w, stdout_r, stderr_r)
        finally:
            spawns_in_progress.discard(spawning)

    def discard(self) -> None:
        """Kill a process nobody will serve, close our pipe ends; the loop reaps it."""
        self.kill()
        self.wait()
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd):
            if fd >= 0:
                os.close(fd)

    def wait(self) -> asyncio.Future[int]:
        """A future for the exit code (negative: killed by that signal). A process that has
        already exited is reaped at once; otherwise a pidfd tells the loop when it does."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            if not self._reaped():
                self._pidfd = os.pidfd_open(self.pid)
                loop.add_reader(self._pidfd, self._reap)
        return self._exited

    def _reap(self) -> None:
        if self._reaped():
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        # else: not yet, a spurious wake-up

    def _reaped(self) -> bool:
        """Collect the exit status if the process has exited (and resolve the future)."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, 0
        if pid == 0:
            return False
        own_children.discard(self.pid)
        returncode = os.waitstatus_to_exitcode(status)
        self.returncode = returncode
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(returncode)
        return True

    def kill(self) -> None:
        """SIGKILL the function's whole process group (it runs in a session of its own).

        Also after the leader has exited: Linux does not hand out a pid while a process
        group of that number still has members, so this reaches only the function's own.
        """
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class Spawner:
    """Starts functions, on the loop's thread or (threads > 0) on worker threads.

    posix_spawn blocks its thread until the child has exec'd, and on a busy machine that
    includes waiting for the child to be scheduled; on worker threads (the call releases the
    GIL) spawns and the loop's I/O overlap. But every GIL hand-over costs the loop too, and
    measurements here disagree with each other under load, so the loop thread is the
    default and the `spawn_threads` setting the knob.
    """

    def __init__(self, threads: int = 0) -> None:
        self._executor = (
            ThreadPoolExecutor(threads, thread_name_prefix="spawn") if threads > 0 else None
        )

    async def spawn(
        self,
        program: Program,
        env: Mapping[str, str],
        stdin_data: bytes | None = None,
        stderr_to_stdout: bool = False,
    ) -> FunctionProcess:
        """`FunctionProcess.spawn`; off the loop, a process whose request is cancelled
        meanwhile (lost client, write_timeout) is killed and reaped once it exists."""
        if self._executor is None:
            return FunctionProcess.spawn(
                program, env, stdin_data, stderr_to_stdout=stderr_to_stdout
            )
        spawning = asyncio.get_running_loop().run_in_executor(
            self._executor,
            functools.partial(
                FunctionProcess.spawn, program, env, stdin_data, stderr_to_stdout=stderr_to_stdout
            ),
        )
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            spawning.add_done_callback(_discard_spawned)
            raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def _discard_spawned(spawning: asyncio.Future[FunctionProcess]) -> None:
    if not spawning.cancelled() and spawning.exception() is None:
        spawning.result().discard()


def _start(
    start: Callable[[str, list[str], Mapping[str, str], list[tuple[int, int, int]]], int],
    path: str,
    program: Program,
    env: Mapping[str, str],
    actions: list[tuple[int, int, int]],
) -> int:
    """Start `program` (found at `path`) with `start`; once more if its file moved or was
    installed since it was looked up."""
    try:
        return start(path, program.argv, env, actions)
    except FileNotFoundError:
        found = program.path(refresh=True)  # moved or installed since we looked
        if found is None:
            raise
        return start(found, program.argv, env, actions)


def _posix_spawn(
    path: str, argv: list[str], env: Mapping[str, str], actions: list[tuple[int, int, int]]
) -> int:
    """posix_spawn in a new session, with the signals Python ignores back at their default."""
    return os.posix_spawn(
        path, argv, env, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS
    )


def _fork_exec_dying_with_parent(
    path: str, argv: list[str], env: Mapping[str, str], actions: list[tuple[int, int, int]]
) -> int:
    """Like `_posix_spawn`, through fork so the child can ask for PR_SET_PDEATHSIG first.

    Slower than posix_spawn (a real fork), which is fine for a process started once.
    """
    stdin_fd, stdout_fd, stderr_fd = (source for _, source, _ in actions)
    popen = subprocess.Popen(
        argv,
        executable=path,
        stdin=stdin_fd,
        stdout=stdout_fd,
        stderr=stderr_fd,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent(os.getpid()),
    )
    # We reap it through a pidfd; a Popen left with no returncode would try to reap it too.
    popen.returncode = 0
    return popen.pid


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The child side of PR_SET_PDEATHSIG: SIGKILL when the watchdog dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the watchdog died before the prctl
            os._exit(1)

    return in_child


def spawn_failure_message(program: str, error: OSError) -> str:
    """Go's wording for a function that cannot start, naming the program."""
    if isinstance(error, FileNotFoundError):
        return f'exec: "{program}": executable file not found in $PATH'
    if isinstance(error, PermissionError):
        return f'exec: "{program}": permission denied'
    return f'exec: "{program}": {error.strerror or error}'


def forward_to_log(fd: int, log: Log, stream_name: str, prefix: bool, max_line: int) -> PipeReader:
    """Forward a function's output pipe to the log, line by line, until it closes."""
    splitter = LineSplitter(lambda line: log.function_line(stream_name, line, prefix), max_line)
    reader = PipeReader(fd, lambda data, _at_eof: splitter.feed(data), splitter.close)
    reader.start()
    return reader
