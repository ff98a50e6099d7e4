"""A long-lived child: `fprocess` started once (http mode), logged, watched and stopped.

It runs in a session of its own, like every function we start, so that stopping it reaches
everything it started. Its stdin is a pipe we hold open and never write (as Go does: a server
that reads stdin waits instead of seeing EOF); stdout and stderr go to the log line by line.
Stopping is polite first: SIGTERM to the group, a grace period, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping

from fwatchdog.process.pipes import PipeReader
from fwatchdog.process.spawn import FunctionProcess, Program, describe_exit, forward_to_log
from fwatchdog.telemetry.logs import Log

# After the child exits, how long its last output lines may take to reach the log (a
# grandchild could hold the pipes open for ever).
OUTPUT_GRACE = 1.0


class LongLivedChild:
    """`fprocess` as a server: start once, report its exit, terminate it at shutdown."""

    def __init__(self, process: FunctionProcess, outputs: list[PipeReader]) -> None:
        self._process = process
        self._outputs = outputs
        self._stdin_closed = False
        self.exited: asyncio.Future[int] = process.wait()

    @classmethod
    def start(
        cls,
        argv: tuple[str, ...],
        env: Mapping[str, str],
        log: Log,
        prefix_logs: bool,
        log_buffer_size: int,
    ) -> LongLivedChild:
        """Spawn the child; raises process.SpawnError naming the program when it cannot run."""
        process = FunctionProcess.spawn(Program(argv), env, die_with_watchdog=True)
        outputs = [
            forward_to_log(fd, log, name, prefix_logs, log_buffer_size)
            for fd, name in ((process.stdout_fd, "stdout"), (process.stderr_fd, "stderr"))
        ]
        return cls(process, outputs)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def exit_description(self) -> str:
        """Go's wording for how it ended (`exit status 3`, `signal: killed`); "" while running."""
        code = self._process.returncode
        return "" if code is None else describe_exit(code)

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call `callback(returncode)` once the child (the group's leader) has exited."""
        self.exited.add_done_callback(lambda future: callback(future.result()))

    async def terminate(self, grace: float) -> None:
        """SIGTERM the group, wait up to `grace` seconds for the leader, then SIGKILL the group.

        The group is killed at the end even when the leader left in time, so that nothing the
        child started outlives the watchdog.
        """
        if not self.exited.done():
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(self.exited)
        self._signal_group(signal.SIGKILL)
        if not self.exited.done():
            await self.exited
        await self._flush_output()
        if not self._stdin_closed:
            self._stdin_closed = True
            os.close(self._process.stdin_fd)

    def _signal_group(self, signum: signal.Signals) -> None:
        # Linux hands out no pid while a process group of that number has members, so this
        # reaches only the child's own, also after the leader has exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    async def _flush_output(self) -> None:
        """Let the last lines the child printed reach the log, then stop reading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTPUT_GRACE
        while any(not reader.closed for reader in self._outputs) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for reader in self._outputs:
            reader.close()
