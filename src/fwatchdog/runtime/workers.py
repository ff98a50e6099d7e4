"""The extra serving processes of http and static mode, seen from the process that started
them (the primary).

One Python process serves on one core, and the Go watchdog uses every core. So in http and
static mode the primary, which owns the child, the lock file and the metrics port, also starts
`http_workers - 1` copies of fwatchdog that accept on the same listening socket and proxy to
the same upstream (or serve the same directory). They share what must be one:

- readiness: a worker serves once the primary says the upstream accepts connections;
- failure: when the child dies the primary tells every worker, which ends its requests (502)
  and exits 1;
- the port: each worker listens on a socket of its own (SO_REUSEPORT), opened once it is
  ready to accept, among which the kernel spreads connections by address (one socket shared
  by all would let the process that wakes first accept a whole burst);
- drain: SIGTERM (and a second one) is forwarded; the primary stops the child only after every
  worker has drained;
- metrics: a scrape of the primary asks each worker for its counters and adds them up.

Workers run in sessions of their own, so a terminal's Ctrl-C reaches only the primary, which
then drains them. A worker whose control socket closes (the primary died) stops at once.

The control socket carries lines. To a worker: `ready`, `fail <reason>`, `metrics <n>`. From
a worker: first `listening` (or `failed`: it could not open the port), then `metrics <n> <json>`
in answer to `metrics <n>` (the number pairs an answer that came after its scrape gave up
with that scrape, not the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
import time
from typing import Any

from fwatchdog.process.spawn import FunctionProcess, describe_exit
from fwatchdog.settings.config import MULTI_PROCESS_MODES, Config
from fwatchdog.telemetry.logs import Log

# The environment variable that makes `python -m fwatchdog` a worker: its control socket's fd.
WORKER_ENV = "FWATCHDOG_WORKER"
# Workers started when http_workers is 0 and the machine has many CPUs: past a few, the
# upstream is the limit, and each process costs about 20 MiB.
MAX_AUTO_WORKERS = 8
# Under a container memory limit, one process per this much of it (128Mi: 1, 512Mi: 4): the
# watchdog's processes then take at most about a sixth of the limit, the rest is the function's.
MEMORY_PER_WORKER = 128 * 1024 * 1024
CGROUP_ROOT = "/sys/fs/cgroup"
# How long a scrape waits for a worker's counters before leaving them out.
SNAPSHOT_TIMEOUT = 1.0
# A worker that dies sooner than this after its start is replaced only after this long.
RESPAWN_DELAY = 1.0

Snapshot = dict[str, Any]


def worker_count(config: Config, cgroup_root: str = CGROUP_ROOT) -> int:
    """How many processes serve the port: http_workers, or (without max_inflight) one per
    CPU the container may use, less the one http mode's own server needs, fewer under a
    small memory limit; 1 in the forking modes and afterburn, whose functions need the CPUs.
    """
    if config.mode not in MULTI_PROCESS_MODES:
        return 1
    if config.http_workers:
        return config.http_workers
    if config.max_inflight:
        return 1
    cpus = cpus_available(cgroup_root) - (config.mode == "http")
    return auto_worker_count(cpus, cgroup_memory_limit(cgroup_root))


def auto_worker_count(cpus: int, memory_limit: int | None) -> int:
    """Processes for `cpus` CPUs free for serving and a memory limit in bytes (None: none)."""
    by_memory = MAX_AUTO_WORKERS if memory_limit is None else memory_limit // MEMORY_PER_WORKER
    return max(1, min(cpus, by_memory, MAX_AUTO_WORKERS))


def cpus_available(cgroup_root: str = CGROUP_ROOT) -> int:
    """CPUs this process may run on, less where a cgroup CPU quota allows fewer (as Go 1.25
    sizes GOMAXPROCS)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota(root: str) -> float | None:
    """CPUs' worth of time the cgroup may use (cgroup v2 `cpu.max`, or v1's CFS files)."""
    v2 = _read_words(f"{root}/cpu.max")
    if v2 is not None:
        return None if v2[0] == "max" else int(v2[0]) / int(v2[1])
    quota = _read_words(f"{root}/cpu/cpu.cfs_quota_us")
    period = _read_words(f"{root}/cpu/cpu.cfs_period_us")
    if quota is None or period is None or int(quota[0]) <= 0:
        return None
    return int(quota[0]) / int(period[0])


def cgroup_memory_limit(root: str) -> int | None:
    """Bytes the cgroup may use (cgroup v2 `memory.max`, or v1's limit; None: no limit)."""
    v2 = _read_words(f"{root}/memory.max")
    if v2 is not None:
        return None if v2[0] == "max" else int(v2[0])
    v1 = _read_words(f"{root}/memory/memory.limit_in_bytes")
    if v1 is None or int(v1[0]) >= 1 << 60:  # v1 writes "no limit" as a huge number
        return None
    return int(v1[0])


def _read_words(path: str) -> list[str] | None:
    """A small kernel file's words; None if it is absent, unreadable or not numbers."""
    try:
        with open(path) as file:
            words = file.read().split()
    except OSError:
        return None
    if not words or not all(word == "max" or word.isdigit() for word in words):
        return None
    return words


class _Worker:
    """One worker process: its pid, its exit, and the primary's end of its control socket."""

    def __init__(self, process: FunctionProcess, control: socket.socket) -> None:
        self.process = process
        self.control = control
        self.started = time.monotonic()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.asking = asyncio.Lock()  # one scrape's question and answer at a time
        self.listening: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._hearing: asyncio.Task[None] | None = None
        self._questions = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_unix_connection(sock=self.control)
        self._hearing = asyncio.get_running_loop().create_task(self._hear_listening(self.reader))

    async def _hear_listening(self, reader: asyncio.StreamReader) -> None:
        """The worker's first line: `listening` once it accepts on the port (or `failed`)."""
        line = b""
        with contextlib.suppress(OSError):
            line = await reader.readline()
        self.listening.set_result(line == b"listening\n")

    def tell(self, line: str) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(line.encode() + b"\n")

    async def snapshot(self) -> Snapshot | None:
        if self.reader is None or not self.listening.done():
            return None
        async with self.asking:
            self._questions += 1
            asked = b"metrics %d " % self._questions
            self.tell(asked[:-1].decode())
            try:
                async with asyncio.timeout(SNAPSHOT_TIMEOUT):
                    line = await self.reader.readline()
                    while line and not line.startswith(asked):  # an earlier scrape's answer
                        line = await self.reader.readline()
            except (TimeoutError, OSError):
                return None
        if not line:
            return None
        import json  # only http mode's scrapes pay for it

        snapshot: Snapshot = json.loads(line[len(asked) :])
        return snapshot

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        else:
            self.control.close()


class Workers:
    """The primary's view of its workers: start them, tell them, forward signals, wait."""

    def __init__(self, count: int, log: Log) -> None:
        self._count = count
        self._log = log
        self._workers: list[_Worker] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._ready = False
        self._failure = ""
        self._stopping = False

    async def start(self) -> None:
        for _ in range(self._count):
            await self._start_one()

    async def _start_one(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control_fd = theirs.fileno()
        # The worker finds it at a fixed number above it (dup2 clears close-on-exec).
        worker_fd = control_fd + 1
        env = dict(os.environ)
        env[WORKER_ENV] = str(worker_fd)
        argv = [sys.executable, "-m", "fwatchdog"]
        try:
            pid = os.posix_spawn(
                sys.executable,
                argv,
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, control_fd, worker_fd)],
                setsid=True,
            )
        finally:
            theirs.close()
        worker = _Worker(FunctionProcess(pid, -1, -1, -1), ours)
        await worker.connect()
        self._workers.append(worker)
        worker.process.wait().add_done_callback(lambda done: self._on_exit(worker, done.result()))
        if self._failure:
            worker.tell(f"fail {self._failure}")
        elif self._stopping:  # SIGTERM came while the workers were starting
            os.kill(pid, signal.SIGTERM)
        elif self._ready:
            worker.tell("ready")

    def _on_exit(self, worker: _Worker, returncode: int) -> None:
        worker.close()
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        if self._stopping or self._failure:
            return
        # A worker exits on its own only through a bug of ours: serve on with another.
        lived = time.monotonic() - worker.started
        delay = RESPAWN_DELAY if lived < RESPAWN_DELAY else 0.0
        self._log.error(
            f"fwatchdog: worker process {worker.process.pid} exited "
            f"({describe_exit(returncode)}); starting another"
        )
        asyncio.get_running_loop().call_later(delay, self._replace)

    def _replace(self) -> None:
        if not (self._stopping or self._failure):
            task = asyncio.get_running_loop().create_task(self._start_one())
            self._starting.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._starting.discard)

    async def listening(self, timeout: float) -> None:
        """Wait until every worker accepts on the port (at most `timeout`)."""
        waits = [worker.listening for worker in self._workers]
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    def ready(self) -> None:
        """The upstream accepts connections: workers may turn healthy and proxy."""
        self._ready = True
        for worker in self._workers:
            worker.tell("ready")

    def fail(self, reason: str) -> None:
        """The child died: workers turn unhealthy, end their requests and exit 1."""
        self._failure = reason.replace("\n", " ")
        for worker in self._workers:
            worker.tell(f"fail {self._failure}")

    def terminate(self) -> None:
        """Forward SIGTERM (or SIGINT, as SIGTERM): a worker drains as the primary does, and
        hurries on a second."""
        self._stopping = True
        for worker in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGTERM)

    async def snapshots(self) -> list[Snapshot]:
        """Every worker's counters, for a scrape (a worker that does not answer is left out)."""
        answers = await asyncio.gather(*(worker.snapshot() for worker in self._workers))
        return [answer for answer in answers if answer is not None]

    async def wait(self, timeout: float) -> None:
        """Wait for every worker to exit, at most `timeout`; then SIGKILL what is left."""
        self._stopping = True
        exits = [worker.process.wait() for worker in self._workers]
        if exits:
            await asyncio.wait(exits, timeout=timeout)
        self.kill()

    def kill(self) -> None:
        self._stopping = True
        for worker in self._workers:
            worker.process.kill()
