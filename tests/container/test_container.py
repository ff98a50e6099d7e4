"""The image of the repository's Dockerfile and the templates on it, in real containers.

Built and run with podman as a user would, with the flags this kind of machine needs
(chroot isolation to build; runc, cgroupfs and the host's network to run). Each test fails
when what it names breaks: serving in each template, the health check, zombies reaped by
PID 1, SIGTERM ending the container with exit status 0 within its grace period, a non-root
user.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "build" / "container" / "wheels"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/fwatchdog-test-base:bookworm")
IMAGE = "localhost/fwatchdog:test"
TEMPLATES = ("python3-http-afterburn", "program-streaming", "python3-flask-afterburn")
# crun refuses this machine's hybrid cgroups; the runtime's network setup is not needed.
RUNTIME = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
# How long `podman stop` waits before SIGKILL: the grace period of these containers.
GRACE = 20


def podman(*args: str, timeout: float = 300, check: bool = True) -> str:
    done = subprocess.run(
        ["podman", *RUNTIME, *args], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {done.returncode}\n{done.stderr}")
    return done.stdout.strip()


def health_check(name: str) -> int:
    """`podman healthcheck run`: the image's HEALTHCHECK run in the container now (0: healthy)."""
    return subprocess.run(
        ["podman", *RUNTIME, "healthcheck", "run", name], capture_output=True, timeout=60
    ).returncode


def build(tag: str, dockerfile: Path, context: Path, *options: str) -> None:
    """`podman build` as the README says, in docker format (OCI images drop HEALTHCHECK)."""
    podman(
        "build", "--quiet", "--isolation=chroot", "--format", "docker",
        "-f", str(dockerfile), "-t", tag, *options, str(context),
    )  # fmt: skip


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The Dockerfile's image from the wheels, then each template's image on top of it."""
    assert WHEELS.is_dir(), "run tests/container/prepare.sh first (make test-container does)"
    context = tmp_path_factory.mktemp("context")
    shutil.copytree(WHEELS, context / "wheels")
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    build(
        IMAGE, ROOT / "Dockerfile", context,
        "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--build-arg", f"GIT_SHA={sha or 'unknown'}",
    )  # fmt: skip
    built = {"fwatchdog": IMAGE}
    for template in TEMPLATES:
        tag = f"localhost/fwatchdog-{template}:test"
        # pip finds the wheels mounted for the build: no network, nothing added to the image.
        build(
            tag, ROOT / "templates" / template / "Dockerfile", ROOT / "templates" / template,
            "--build-arg", f"FWATCHDOG_IMAGE={IMAGE}",
            "--build-arg", "PIP_OPTIONS=--no-index --find-links /wheels",
            "-v", f"{WHEELS}:/wheels:ro",
        )  # fmt: skip
        built[template] = tag
    return built


@dataclass
class Container:
    name: str
    port: int

    @property
    def host_pid(self) -> int:
        """The container's PID 1 as this machine numbers it."""
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name))

    def request(
        self, method: str, path: str = "/", body: bytes | None = None, timeout: float = 10
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/_/health", timeout=2)[0] == 200
        except OSError:
            return False

    def logs(self) -> str:
        """What the container wrote (podman replays its stderr on stderr)."""
        done = subprocess.run(
            ["podman", *RUNTIME, "logs", self.name], capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr


@pytest.fixture
def start(images: dict[str, str]) -> Iterator[Callable[..., Container]]:
    """Start a container of an image (by template name) with settings; removed afterwards."""
    names: list[str] = []

    def starter(image: str, *options: str, wait: bool = True, **settings: str) -> Container:
        port = free_port()
        name = f"fwatchdog-test-{os.getpid()}-{len(names)}-{time.monotonic_ns()}"
        environment = {"port": str(port), "metrics_port": str(free_port()), **settings}
        flags = [flag for key, value in environment.items() for flag in ("-e", f"{key}={value}")]
        podman("run", "-d", "--network=host", "--name", name, *flags, *options, images[image])
        names.append(name)
        container = Container(name, port)
        if wait and not wait_until(container.healthy, timeout=20):
            raise AssertionError(f"{image} never became healthy:\n{container.logs()}")
        return container

    yield starter
    for name in names:
        podman("rm", "--force", "--time", "0", name, check=False)


def _status_line(pid: int, field: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split()[1:]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_python3_http_template_answers_like_python3_http(
    start: Callable[..., Container],
) -> None:
    container = start("python3-http-afterburn")
    assert container.request("GET", "/") == (200, b"Hello from OpenFaaS!")
    assert container.request("POST", "/anything?x=1", b"body") == (200, b"Hello from OpenFaaS!")


def test_program_template_runs_the_program_per_request(start: Callable[..., Container]) -> None:
    container = start("program-streaming")
    status, body = container.request("POST", "/greet", b"hello")
    assert (status, body) == (200, b"Hello from a program: POST /greet\nbytes received: 5\n")


def test_flask_template_serves_the_app_without_a_wsgi_server(
    start: Callable[..., Container],
) -> None:
    container = start("python3-flask-afterburn")
    status, body = container.request("POST", "/items/7", b"12345")
    assert status == 200
    assert body == b'{"bytes":5,"message":"Hello from Flask","path":"/items/7"}\n'


def test_version_names_the_commit_built(images: dict[str, str]) -> None:
    printed = podman("run", "--rm", "--network=host", images["fwatchdog"], "fwatchdog", "--version")
    assert printed.startswith("Version: ")
    assert "SHA: unknown" not in printed


def test_image_carries_the_tracing_extra(images: dict[str, str]) -> None:
    """Tracing turns on with OTEL_EXPORTER_OTLP_ENDPOINT alone: the SDK must be in the image."""
    printed = podman(
        "run",
        "--rm",
        "--network=host",
        images["fwatchdog"],
        "python3",
        "-c",
        "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http; print('ok')",
    )
    assert printed.strip() == "ok"


def test_health_check_is_the_watchdog_s_and_follows_the_lock_file(
    start: Callable[..., Container],
) -> None:
    configured = podman("image", "inspect", "--format", "{{json .HealthCheck.Test}}", IMAGE)
    assert configured == '["CMD","fwatchdog","--run-healthcheck"]'
    assert podman("image", "inspect", "--format", "{{.Config.StopSignal}}", IMAGE) == "SIGTERM"
    container = start("program-streaming", healthcheck_interval="10s")
    assert health_check(container.name) == 0
    # SIGTERM removes the lock file at once; the container lives on through the interval.
    podman("kill", "--signal", "TERM", container.name)
    time.sleep(0.5)
    assert health_check(container.name) == 1
    assert container.healthy() is False  # /_/health says the same


def test_runs_as_a_non_root_user(start: Callable[..., Container]) -> None:
    container = start("program-streaming")
    pid = container.host_pid
    assert _status_line(pid, "Uid") == ["10001"] * 4
    assert _status_line(pid, "Gid") == ["10001"] * 4


def test_pid_1_reaps_orphaned_grandchildren(
    start: Callable[..., Container], tmp_path: Path
) -> None:
    script = tmp_path / "orphaning.sh"
    script.write_text("#!/bin/sh\n(sleep 0.2 &)\ncat\n")
    script.chmod(0o755)
    container = start(
        "fwatchdog",
        "-v",
        f"{script}:/home/app/orphaning.sh:ro",
        fprocess="sh /home/app/orphaning.sh",
    )
    pid = container.host_pid
    assert _status_line(pid, "NSpid")[-1] == "1", "the watchdog is not PID 1"
    for number in range(50):
        assert container.request("POST", "/", str(number).encode()) == (200, str(number).encode())
    time.sleep(0.5)  # the last orphans' sleep ends

    def zombies() -> list[int]:
        return [child for child in _children(pid) if _state(child) == "Z"]

    assert wait_until(lambda: not zombies(), timeout=5), f"{len(zombies())} zombies"


def test_sigterm_drains_and_exits_0_within_the_grace_period(
    start: Callable[..., Container], tmp_path: Path
) -> None:
    script = tmp_path / "slow.sh"
    script.write_text("#!/bin/sh\nsleep 2\necho done\n")
    script.chmod(0o755)
    container = start(
        "fwatchdog",
        "-v",
        f"{script}:/home/app/slow.sh:ro",
        fprocess="sh /home/app/slow.sh",
        healthcheck_interval="1s",
        write_timeout="10s",
    )
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(container.request, "GET", "/")
        time.sleep(0.5)
        started = time.monotonic()
        podman("stop", "--time", str(GRACE), container.name, timeout=GRACE + 30)
        took = time.monotonic() - started
        assert in_flight.result() == (200, b"done\n")
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container.name)
    assert (exit_code, took < GRACE - 5) == ("0", True), (took, container.logs())
    assert "SIGTERM" in container.logs()
