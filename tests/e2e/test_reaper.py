"""Orphaned grandchildren are reaped, as PID 1 of a PID namespace and as a child subreaper,
while the watchdog's own children keep their exit statuses (process/reaper.py)."""

import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Watchdog, children_of, wait_until

# The subshell starts `sleep` and exits at once: the sleep is orphaned, and exits 0.1 s later.
ORPHANING = '#!/bin/sh\n(sleep 0.1 &)\ncat\nexit "${Http_X_Exit:-0}"\n'
# The same orphan in a session of its own, as a daemon makes: a session leader like ours.
ORPHANING_SETSID = '#!/bin/sh\n(setsid sleep 0.1 &)\ncat\nexit "${Http_X_Exit:-0}"\n'
# `--kill-child`: if the test dies, the kernel kills the namespace's PID 1 and all in it.
NAMESPACE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
RUNS = 200


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _zombies(pid: int) -> list[int]:
    return [child for child in children_of(pid) if _state(child) == "Z"]


def _script(directory: Path, text: str) -> str:
    """fprocess is split on spaces, as in Go: shell syntax goes in a script."""
    path = directory / f"function-{time.monotonic_ns()}.sh"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def _namespaced_watchdog(
    factory: Callable[..., Watchdog], fprocess: str, **settings: str
) -> tuple[Watchdog, int]:
    """A watchdog that is PID 1 of a new PID namespace, and its pid as seen from here."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to run the watchdog as PID 1")
    watchdog = factory(command_prefix=NAMESPACE, fprocess=fprocess, **settings)
    (pid,) = children_of(watchdog.process.pid)  # unshare's one child
    nspid = next(
        line.split()[1:]
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("NSpid:")
    )
    assert nspid[-1] == "1", f"not PID 1 in its namespace: NSpid {nspid}"
    return watchdog, pid


def _run_many(watchdog: Watchdog) -> None:
    """RUNS requests, four at a time; every third function exits 3 without output."""

    def one(number: int) -> None:
        if number % 3 == 0:
            status, _, body = watchdog.request("POST", "/", headers={"X-Exit": "3"}, timeout=30)
            assert (status, body) == (500, b"exit status 3\n")
        else:
            sent = f"request {number}".encode()
            status, _, body = watchdog.request("POST", "/", body=sent, timeout=30)
            assert (status, body) == (200, sent)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(RUNS)))


@pytest.mark.parametrize(
    ("orphaning", "spawn_threads"),
    [(ORPHANING, "0"), (ORPHANING_SETSID, "0"), (ORPHANING_SETSID, "2")],
    ids=["plain", "setsid", "setsid-spawn-threads"],  # threads: spawns register off the loop
)
@pytest.mark.parametrize("as_pid_1", [True, False], ids=["pid-1", "subreaper"])
def test_orphans_leave_no_zombies_and_own_exit_statuses_stay_right(
    watchdog_factory: Callable[..., Watchdog],
    tmp_path: Path,
    as_pid_1: bool,
    orphaning: str,
    spawn_threads: str,
) -> None:
    fprocess = _script(tmp_path, orphaning)
    if as_pid_1:
        watchdog, pid = _namespaced_watchdog(
            watchdog_factory, fprocess, spawn_threads=spawn_threads
        )
    else:
        watchdog = watchdog_factory(fprocess=fprocess, spawn_threads=spawn_threads)
        pid = watchdog.process.pid
    _run_many(watchdog)
    time.sleep(0.3)  # the last orphans' sleep ends
    assert wait_until(lambda: not _zombies(pid), timeout=5), (
        f"{len(_zombies(pid))} zombies left after {RUNS} runs"
    )
    # SIGTERM to the watchdog itself (unshare only waits): PID 1 drains and exits 0.
    os.kill(pid, signal.SIGTERM)
    assert watchdog.process.wait(10) == 0, watchdog.log()


def test_not_pid_1_it_becomes_the_orphans_parent(
    watchdog_factory: Callable[..., Watchdog], tmp_path: Path
) -> None:
    """Without PR_SET_CHILD_SUBREAPER the orphan would go to the host's init, out of reach."""
    fprocess = _script(tmp_path, "#!/bin/sh\n(exec sleep 2 &)\ncat\n")
    watchdog = watchdog_factory(fprocess=fprocess)
    assert watchdog.request("POST", "/", body=b"x")[0] == 200
    pid = watchdog.process.pid

    def sleeping_orphans() -> list[int]:
        return [child for child in children_of(pid) if _command(child) == "sleep"]

    # The orphan sleeps 2 s: long enough to be seen under load, short enough to wait out.
    assert wait_until(lambda: bool(sleeping_orphans()), timeout=2), "the orphan went elsewhere"
    assert wait_until(lambda: not children_of(pid), timeout=10), (
        f"left as children: {[(child, _state(child)) for child in children_of(pid)]}"
    )
