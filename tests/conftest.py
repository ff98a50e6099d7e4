"""Shared fixtures: start the real `fwatchdog` process on free ports and talk HTTP to it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fwatchdog.telemetry.logs import FLUSH_GAP

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = Path(__file__).resolve().parent / "functions"
# How long a line the watchdog has made may take to reach its log: FLUSH_GAP, with room for
# a busy machine.
LOG_SETTLE = FLUSH_GAP * 10


# Every port free_port has given out in this run.
_ports_given: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and was given to nothing else in this run: the
    kernel may offer the same free port twice in a row (a watchdog once got its own port as
    metrics_port, and refused to start)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `condition` every 10 ms: True once it holds, False if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_until(sock: socket.socket, marker: bytes, received: bytes = b"") -> bytes:
    """Read from `sock` until `marker` has arrived; everything read so far (after `received`).

    Fails the test, naming the marker and what did arrive, if the connection closes first."""
    while marker not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {received!r}")
        received += chunk
    return received


def wait_for_pid(pidfile: Path, timeout: float = 10.0) -> int:
    """The process id a test function wrote to `pidfile`, once it has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists():
            return int(pidfile.read_text())
        time.sleep(0.01)
    raise AssertionError(f"the function never wrote {pidfile}")


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (zombies included), from every one of its threads."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            listed = (task / "children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
        children += [int(child) for child in listed.split()]
    return children


def process_gone(pid: int) -> bool:
    """Whether process `pid` has ended: it no longer exists, or is a zombie awaiting its parent.

    Checks once; poll it with `wait_until(lambda: process_gone(pid), timeout)`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True  # reaped between the two looks (ESRCH when reaped between open and read)
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def holding_upstream_connections(pids: list[int], port: int) -> set[int]:
    """Which of `pids` have an established TCP connection to 127.0.0.1:`port`."""
    return sockets_of(pids, port, state="01", end=2)


def accepted_on(pids: list[int], port: int) -> set[int]:
    """Which of `pids` hold an established connection accepted on `port`."""
    return sockets_of(pids, port, state="01", end=1)


def listening_on(pids: list[int], port: int) -> set[int]:
    """Which of `pids` have a socket listening on `port`."""
    return sockets_of(pids, port, state="0A", end=1)


def sockets_of(pids: list[int], port: int, state: str, end: int) -> set[int]:
    """Which of `pids` have a TCP socket in `state` whose local (`end` 1) or remote (2)
    port is `port`, from /proc."""
    owner: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        owner[target[len("socket:[") : -1]] = pid
    holders = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            address, inode = fields[end], fields[9]
            if fields[3] == state and int(address.rsplit(":", 1)[1], 16) == port and inode in owner:
                holders.add(owner[inode])
    return holders


def http_mode_settings(**settings: str) -> dict[str, str]:
    """Settings for http mode in front of tests/functions/httpmode_server.py on a free port."""
    upstream_port = free_port()
    return {
        "mode": "http",
        "fprocess": f"{sys.executable} {function('httpmode_server.py')}",
        "upstream_url": f"http://127.0.0.1:{upstream_port}",
        "UPSTREAM_PORT": str(upstream_port),
        "exec_timeout": "10s",
        "write_timeout": "10s",
        **settings,
    }


@dataclass
class Watchdog:
    """A running fwatchdog process and the means to talk to it."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    tmpdir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def lock_path(self) -> Path:
        return self.tmpdir / ".lock"

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str = "/",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection: status, headers (last value wins), body."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def exchange(
        self,
        method: str,
        path: str = "/",
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request whose headers may repeat a name (and may set Host): status, all
        response headers, body. A body is sent with its Content-Length, even when empty."""
        conn = self.connection(timeout)
        try:
            own_host = any(name.lower() == "host" for name, _ in headers or [])
            conn.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
            for name, value in headers or []:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout: float = 5.0, shut_write: bool = False) -> bytes:
        """Send raw bytes, return everything the server sends until it closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                pass
            return b"".join(chunks)

    def log(self) -> str:
        """The log as of now: a running watchdog writes its lines within FLUSH_GAP."""
        if self.process.poll() is None:
            time.sleep(LOG_SETTLE)
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not in log:\n{self.log()}")

    def metrics(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def vmhwm_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def terminate(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def health(watchdog: Watchdog) -> int:
    """The status of GET /_/health (0: no answer)."""
    try:
        return watchdog.request("GET", "/_/health", timeout=2)[0]
    except OSError:
        return 0


def start_watchdog(
    tmp_path: Path, wait: bool = True, command_prefix: tuple[str, ...] = (), **settings: str
) -> Watchdog:
    """Start `python -m fwatchdog` with these settings on free ports; `command_prefix` runs
    it through another program (which must exec it, keeping the pid)."""
    tmpdir = tmp_path / f"wd-{time.monotonic_ns()}"
    tmpdir.mkdir()
    port, metrics_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("fprocess", "function_process", "mode", "port")
    }
    env.update(
        TMPDIR=str(tmpdir),
        port=str(port),
        metrics_port=str(metrics_port),
        healthcheck_interval="0s",
        PYTHONPATH=str(ROOT / "src"),
    )
    env.update(settings)
    log_path = tmpdir / "watchdog.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*command_prefix, sys.executable, "-m", "fwatchdog"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmpdir,
        )
    watchdog = Watchdog(process, port, metrics_port, tmpdir, log_path, env)
    if wait:
        try:
            wait_for_port(port)
        except TimeoutError:
            process.kill()
            raise AssertionError(f"fwatchdog did not start:\n{watchdog.log()}") from None
        # Static mode serves in a process per CPU; the port opens with the first, and health
        # turns 200 once every one listens, which is when a test may begin.
        if env.get("mode") == "static" and not wait_until(lambda: health(watchdog) == 200, 10):
            process.kill()
            raise AssertionError(f"fwatchdog did not turn healthy:\n{watchdog.log()}")
    return watchdog


@pytest.fixture
def watchdog_factory(tmp_path: Path) -> Iterator[Callable[..., Watchdog]]:
    """Start watchdogs with `factory(fprocess="cat", ...)`; all are stopped afterwards."""
    started: list[Watchdog] = []

    def factory(
        wait: bool = True, command_prefix: tuple[str, ...] = (), **settings: str
    ) -> Watchdog:
        watchdog = start_watchdog(tmp_path, wait=wait, command_prefix=command_prefix, **settings)
        started.append(watchdog)
        return watchdog

    yield factory
    for watchdog in started:
        # SIGTERM first, so that a mode's long-lived children are stopped by the watchdog.
        if watchdog.process.poll() is None:
            watchdog.process.send_signal(signal.SIGTERM)
            try:
                watchdog.process.wait(5)
            except subprocess.TimeoutExpired:
                watchdog.process.kill()
                watchdog.process.wait(10)


def environment_of(output: bytes) -> dict[str, str]:
    """The `NAME=value` lines that `env` printed, first occurrence of each name."""
    variables: dict[str, str] = {}
    for line in output.decode().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            variables.setdefault(name, value)
    return variables


def function(name: str) -> str:
    """Path of a test function program in tests/functions."""
    return str(FUNCTIONS / name)
