"""Start, probe and stop one watchdog process, and read its memory use from /proc.

Every scenario run gets a fresh process on a free port with its own TMPDIR (the lock file lives
there), configured only through environment variables, as both the Go of-watchdog and fwatchdog
are. The Go watchdog always serves metrics on 8081, so two watchdogs never run at once here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.http_client import simple_request

# Generous timeouts for everyone, so that a slow 2 GiB stream is measured rather than cut.
BASE_SETTINGS: dict[str, str] = {
    "read_timeout": "120s",
    "write_timeout": "120s",
    "exec_timeout": "120s",
    # Go's drain does `<-time.Tick(interval)`, and Tick(0) is nil: "0" would never exit.
    "healthcheck_interval": "1ms",
}
# The Go of-watchdog hard-codes its metrics port; never hand it to anyone else.
GO_METRICS_PORT = 8081
HEALTH_TIMEOUT = 15.0
STOP_GRACE = 1.0
BIND_RETRIES = 20


class WatchdogError(RuntimeError):
    """The watchdog did not start, died, or misbehaved; the message says which and shows its log."""


@dataclass(frozen=True)
class WatchdogBinary:
    """A watchdog executable to measure, with the label it gets in the report."""

    label: str
    path: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (never the Go metrics port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != GO_METRICS_PORT:
            return port


def proc_status_kib(pid: int, field: str) -> int:
    """One `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise WatchdogError(f"/proc/{pid}/status has no {field}")


class Watchdog:
    """One running watchdog process; use `running()` to get one that is stopped afterwards."""

    def __init__(self, binary: WatchdogBinary, settings: Mapping[str, str]) -> None:
        self.binary = binary
        self.port = free_port()
        self.tmpdir = Path(tempfile.mkdtemp(prefix="fwatchdog-bench-"))
        self.log_path = self.tmpdir / "watchdog.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.tmpdir),
            **BASE_SETTINGS,
            "port": str(self.port),
            # Only fwatchdog reads metrics_port; Go ignores it and uses 8081.
            "metrics_port": str(free_port()),
            **settings,
        }
        self.env = env
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        try:
            self.process = subprocess.Popen(
                [str(binary.path)],
                env=env,
                cwd=self.tmpdir,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise WatchdogError(f"cannot run {binary.path}: {exc}") from exc

    @property
    def pid(self) -> int:
        """The watchdog's own process id (not its function's)."""
        return self.process.pid

    def rss_mib(self) -> float:
        """Resident memory of the watchdog process now, MiB."""
        return proc_status_kib(self.pid, "VmRSS") / 1024

    def serving_rss_mib(self) -> float:
        """Resident memory of the processes serving the port now, MiB: the watchdog and
        the worker processes it started (fwatchdog's http_workers), not its function."""
        pids = [self.pid]
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with open(f"/proc/{self.pid}/task/{task}/children", encoding="ascii") as children:
                pids += [int(child) for child in children.read().split()]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    is_watchdog = (
                        pid == self.pid or b"\0FWATCHDOG_WORKER=" in b"\0" + environ.read()
                    )
                if is_watchdog:
                    total += proc_status_kib(pid, "VmRSS")
            except (OSError, WatchdogError):
                continue  # a process that ended meanwhile
        return total / 1024

    def peak_rss_mib(self) -> float:
        """Peak resident memory of the watchdog process since it started, MiB."""
        return proc_status_kib(self.pid, "VmHWM") / 1024

    def check_alive(self) -> None:
        """Raise WatchdogError (with the log's tail) if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise WatchdogError(f"{self.binary.label} exited with {code}:\n{self.log_tail()}")

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Poll GET /_/health until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError):
                if simple_request(self.port, "GET", "/_/health", timeout=1.0).status == 200:
                    return
            time.sleep(0.005)
        raise WatchdogError(
            f"{self.binary.label}: /_/health not 200 within {timeout:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the watchdog wrote, for error messages."""
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a second; clean up its temp dir."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Functions the watchdog left behind in its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def is_bind_conflict(error: Exception) -> bool:
    """Whether the watchdog died because a port it wanted was taken."""
    return "address already in use" in str(error).lower()


def _start(binary: WatchdogBinary, settings: Mapping[str, str], wait: bool) -> Watchdog:
    """Start a watchdog, retrying while a port it needs is taken.

    Another Go watchdog on this machine (a test, say) holds 8081 for a moment; a free port can
    also be taken between our check and the watchdog's bind.
    """
    for attempt in range(BIND_RETRIES):
        watchdog = Watchdog(binary, settings)
        if not wait:
            return watchdog  # the caller times the start and handles a failed bind itself
        try:
            watchdog.wait_healthy()
            return watchdog
        except WatchdogError as exc:
            watchdog.stop()
            if not is_bind_conflict(exc) or attempt == BIND_RETRIES - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running(
    binary: WatchdogBinary, settings: Mapping[str, str], wait: bool = True
) -> Iterator[Watchdog]:
    """A fresh watchdog (healthy, unless `wait` is false), stopped when the block ends."""
    watchdog = _start(binary, settings, wait)
    try:
        yield watchdog
    finally:
        watchdog.stop()
