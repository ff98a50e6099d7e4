"""The `fwatchdog` command: flags, then the settings from the environment, then the server.

Settings come from the environment, as in the Go of-watchdog, so the only flags are the ones that
do something other than serve: `--version` and `--run-healthcheck` (a container HEALTHCHECK).
"""

import os
import sys
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fwatchdog import __version__
from fwatchdog.settings.config import SETTINGS, ConfigError, load_config, lock_file_path
from fwatchdog.telemetry.logs import Log

if TYPE_CHECKING:
    import argparse


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command and return its exit status (the console script exits with it)."""
    environ = os.environ if environ is None else environ
    flags = sys.argv[1:] if argv is None else argv
    if flags:
        # argparse costs start-up time, and serving (no flags) is what must start fast.
        parser = _parser()
        try:
            args = parser.parse_args(flags)
        except SystemExit as exit_request:  # --help, or a usage error argparse printed
            return exit_request.code if isinstance(exit_request.code, int) else 2
        if args.version:
            # Go's line, which scripts grep for `Version:`.
            print(f"Version: {__version__}\tSHA: {_commit()}")
            return 0
        if args.run_healthcheck:
            return _run_healthcheck(environ)

    try:
        config = load_config(environ)
    except ConfigError as error:
        print(f"fwatchdog: {error}", file=sys.stderr)
        return 2
    log = Log(json_format=config.log_format == "json")

    # Imported here so --version, --run-healthcheck and config errors stay quick.
    from fwatchdog.runtime.event_loop import load_without_openssl

    if not config.jwt_auth:  # its issuer and keys may be https (TLS on the loop)
        load_without_openssl()
    from fwatchdog.runtime.server import run
    from fwatchdog.runtime.workers import WORKER_ENV

    # A worker process of http mode (workers.py), with its control socket to the primary.
    control_fd = os.environ.pop(WORKER_ENV, "") if environ is os.environ else ""
    return run(config, log, int(control_fd) if control_fd else None)


def _commit() -> str:
    """The commit built from: FWATCHDOG_GIT_SHA, set by the image build (Dockerfile ARG
    GIT_SHA); a wheel carries no commit, so "unknown" as Go prints for a plain `go build`."""
    return os.environ.get("FWATCHDOG_GIT_SHA", "").strip() or "unknown"


def _run_healthcheck(environ: Mapping[str, str]) -> int:
    """Healthy while the lock file exists: the server writes it once it is ready to serve."""
    path = lock_file_path(environ)
    if os.path.exists(path):
        return 0
    print(f"unable to find lock file: {path}", file=sys.stderr)
    return 1


def _parser() -> "argparse.ArgumentParser":
    import argparse

    parser = argparse.ArgumentParser(
        prog="fwatchdog",
        description="Serve HTTP requests by running a function program (the OpenFaaS watchdog).",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument("--version", action="store_true", help="print the version and exit")
    flags.add_argument(
        "--run-healthcheck",
        action="store_true",
        help="exit 0 if the lock file exists (the watchdog is serving), 1 if not",
    )
    return parser


def _settings_help() -> str:
    """Every setting from the one table, so --help cannot drift from what is read."""
    lines = [
        "settings:",
        "  Read from environment variables. Where a setting has several names, the first one",
        "  set wins. An empty variable means the default.",
        "",
    ]
    for setting in SETTINGS:
        lines.append(f"  {', '.join(setting.env_names)}  (default: {setting.default_text})")
        lines.extend(
            textwrap.wrap(
                setting.meaning, width=78, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        )
    lines += [
        "  TMPDIR  (default: /tmp)",
        "      directory of the lock file, $TMPDIR/.lock, that /_/health and",
        "      --run-healthcheck look for",
    ]
    return "\n".join(lines)
