"""The real `python -m fwatchdog` process: flags, the health check and start-up errors."""

import subprocess
import sys
from pathlib import Path

import pytest

from fwatchdog import __version__
from fwatchdog.settings.config import SETTINGS

SRC = Path(__file__).resolve().parents[2] / "src"


def fwatchdog(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    """Run the watchdog with only the given settings in its environment."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), **environ}
    return subprocess.run(
        [sys.executable, "-m", "fwatchdog", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_version_prints_go_s_line_with_an_unknown_commit() -> None:
    result = fwatchdog("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"Version: {__version__}\tSHA: unknown\n",
        "",
    )


def test_version_names_the_commit_the_image_was_built_from() -> None:
    result = fwatchdog("--version", FWATCHDOG_GIT_SHA="9bdadb1e")
    assert result.stdout == f"Version: {__version__}\tSHA: 9bdadb1e\n"


def test_version_needs_no_settings_even_bad_ones() -> None:
    assert fwatchdog("--version", port="nope").returncode == 0


def test_help_lists_every_setting_and_its_names() -> None:
    result = fwatchdog("--help")
    assert result.returncode == 0
    assert "environment variables" in result.stdout
    for setting in SETTINGS:
        assert ", ".join(setting.env_names) in result.stdout
        assert f"(default: {setting.default_text})" in result.stdout
    assert "fprocess" in result.stdout
    assert "TMPDIR" in result.stdout


def test_unknown_flag_is_a_usage_error() -> None:
    result = fwatchdog("--serve-forever")
    assert result.returncode == 2
    assert "unrecognized arguments: --serve-forever" in result.stderr


def test_run_healthcheck_passes_when_the_lock_file_exists(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("")
    result = fwatchdog("--run-healthcheck", TMPDIR=str(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")


def test_run_healthcheck_fails_without_the_lock_file(tmp_path: Path) -> None:
    result = fwatchdog("--run-healthcheck", TMPDIR=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"unable to find lock file: {tmp_path / '.lock'}\n"


def test_run_healthcheck_ignores_other_settings(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("")
    result = fwatchdog("--run-healthcheck", TMPDIR=str(tmp_path), mode="bogus", port="x")
    assert result.returncode == 0


CAT = {"fprocess": "cat"}


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({}, "fprocess"),
        ({"fprocess": "  "}, "fprocess"),
        ({"function_process": ""}, "fprocess"),
        ({**CAT, "mode": "afterburner"}, "mode"),
        ({**CAT, "port": "http"}, "port"),
        ({**CAT, "port": "0"}, "port"),
        ({**CAT, "port": "70000"}, "port"),
        ({**CAT, "metrics_port": "-1"}, "metrics_port"),
        ({**CAT, "port": "9000", "metrics_port": "9000"}, "metrics_port"),
        ({**CAT, "mode": "http"}, "http_upstream_url"),
        ({**CAT, "mode": "http", "upstream_url": "https://x"}, "upstream_url"),
        ({**CAT, "mode": "http", "http_upstream_url": "localhost:80"}, "http_upstream_url"),
        ({**CAT, "exec_timeout": "5x"}, "exec_timeout"),
        ({**CAT, "exec_timeout": "-5s"}, "exec_timeout"),
        ({**CAT, "read_timeout": "1m30"}, "read_timeout"),
        ({**CAT, "write_timeout": "0"}, "write_timeout"),
        ({**CAT, "write_timeout": "-1s"}, "write_timeout"),
        ({**CAT, "healthcheck_interval": "soon"}, "healthcheck_interval"),
        ({**CAT, "max_inflight": "-1"}, "max_inflight"),
        ({**CAT, "max_inflight": "lots"}, "max_inflight"),
        ({**CAT, "suppress_lock": "maybe"}, "suppress_lock"),
        ({**CAT, "prefix_logs": "nah"}, "prefix_logs"),
        ({**CAT, "log_callid": "2"}, "log_callid"),
        ({**CAT, "buffer_http": "yep"}, "buffer_http"),
        ({**CAT, "http_buffer_req_body": "yep"}, "http_buffer_req_body"),
        ({**CAT, "ready_path": "ready"}, "ready_path"),
        ({**CAT, "log_buffer_size": "0"}, "log_buffer_size"),
        ({**CAT, "log_buffer_size": "-2"}, "log_buffer_size"),
        ({**CAT, "log_buffer_size": "64k"}, "log_buffer_size"),
        ({**CAT, "log_format": "xml"}, "log_format"),
    ],
)
def test_bad_setting_stops_start_with_one_line_naming_it(
    environ: dict[str, str], setting: str
) -> None:
    result = fwatchdog(**environ)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"fwatchdog: {setting}: ")
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1


def test_bad_duration_error_says_what_works() -> None:
    result = fwatchdog(**CAT, exec_timeout="5x")
    assert result.stderr == (
        "fwatchdog: exec_timeout: '5x' is not a duration (unknown unit 'x'); "
        "use 30s, 1m30s, 500ms or a number of seconds\n"
    )


def test_a_go_setting_that_cannot_be_honoured_stops_start_naming_it() -> None:
    """Go's classic debug_headers is not implemented: refusing beats silently ignoring it."""
    result = fwatchdog(**CAT, debug_headers="true")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fwatchdog: debug_headers: 'true' cannot be honoured: ")
    assert result.stderr.count("\n") == 1
