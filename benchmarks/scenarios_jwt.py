"""`http-gateway-jwt`: `http-gateway` with jwt_auth on in both watchdogs (issue 16's target).

A real OpenID issuer (tests/issuer.py: discovery document and JWK set over HTTP) listens on
127.0.0.1:8000, where `jwt_auth_local=true` makes both the Go of-watchdog and fwatchdog look
for it, and mints one RS256 token valid for an hour: `iss` and `aud` are the issuer's URL and
`function.permissions` is `*`, which is what Go's faas-middleware checks. wrk sends the
`http-gateway` requests (100 B POSTs, fresh X-Call-Id / X-Start-Time) with
`Authorization: Bearer <that token>`, so what is measured is the proxy plus checking the token.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.harness import Watchdog, WatchdogBinary, running
from benchmarks.scenarios import Metric, Options, Scenario, ScenarioError
from benchmarks.scenarios_http import NGINX, UPSTREAM_READY_TIMEOUT, _checked, _settings
from benchmarks.wrk import GATEWAY_SCRIPT, INSTALL_HINT, WrkResult, find_wrk, parse_wrk

TESTS = Path(__file__).resolve().parent.parent / "tests"
# Go's faas-middleware hard-codes this authority for jwt_auth_local=true.
ISSUER_PORT = 8000
FUNCTION_REF = {"OPENFAAS_NAME": "bench", "OPENFAAS_NAMESPACE": "openfaas-fn"}
BODY_SIZE = 100


@contextmanager
def _issuer() -> Iterator[str]:
    """A started issuer on 127.0.0.1:8000; yields a valid RS256 token, stops it afterwards."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))  # the test suite's issuer, not a copy of it
    from issuer import Issuer

    issuer = Issuer()
    # Go cannot be pointed elsewhere: move the issuer (and what its tokens name) to :8000.
    issuer.port = ISSUER_PORT
    issuer.url = issuer.issuer = f"http://127.0.0.1:{ISSUER_PORT}"
    issuer.add_key("RSA", "bench-1")
    try:
        issuer.start()
    except OSError as error:
        raise ScenarioError(
            f"the issuer cannot listen on 127.0.0.1:{ISSUER_PORT}: {error}"
        ) from error
    try:
        yield issuer.mint("bench-1", expires_in=3600)
    finally:
        issuer.stop()


def _status(port: int, token: str | None) -> int:
    """The status of one gateway-shaped POST, with the token or without."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request("POST", "/", body=b"x" * BODY_SIZE, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _wait_and_check(watchdog: Watchdog, token: str) -> None:
    """Until a request with the token goes through; then one without must be refused, or the
    scenario would measure a watchdog that does not check."""
    deadline = time.monotonic() + UPSTREAM_READY_TIMEOUT
    while True:
        watchdog.check_alive()
        try:
            if _status(watchdog.port, token) == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ScenarioError(f"no 200 with the token within {UPSTREAM_READY_TIMEOUT:.0f}s")
        time.sleep(0.01)
    refused = _status(watchdog.port, None)
    if refused != 401:
        raise ScenarioError(f"a request without a token got {refused}, not 401")


def _run_wrk(port: int, token: str, options: Options) -> WrkResult:
    """wrk -t1 with the `http-gateway` Lua script plus the bearer token on every request."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    script = (GATEWAY_SCRIPT % BODY_SIZE).replace(
        "local headers = {\n",
        f'local headers = {{\n  ["Authorization"] = {json.dumps("Bearer " + token)},\n',
        1,
    )
    if "Authorization" not in script:
        raise RuntimeError("GATEWAY_SCRIPT changed shape: cannot add the Authorization header")
    with tempfile.TemporaryDirectory(prefix="fwatchdog-wrk-") as tmp:
        path = Path(tmp) / "post.lua"
        path.write_text(script)
        command = [wrk, "-t1", f"-c{options.connections}", f"-d{options.duration:g}s"]
        command += ["--timeout", "5s", "--latency", "-s", str(path), f"http://127.0.0.1:{port}/"]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=options.duration + 30, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def proxy_to_nginx_gateway_jwt(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog (jwt_auth on) to nginx, gateway-shaped calls with a token."""
    with _issuer() as token:
        settings = {
            **_settings(str(NGINX)),
            **FUNCTION_REF,
            "jwt_auth": "true",
            "jwt_auth_local": "true",
        }
        with running(binary, settings) as watchdog:
            _wait_and_check(watchdog, token)
            result = _run_wrk(watchdog.port, token, options)
            watchdog.check_alive()
    return _checked(result, "through the watchdog")


def jwt_scenarios(options: Options) -> list[Scenario]:
    load = f"wrk -t1 -c{options.connections}, 100 B POST"
    return [
        Scenario(
            "http-gateway-jwt",
            (
                Metric(
                    "rps",
                    f"http mode to nginx, gateway-shaped, jwt_auth with a valid RS256 token, "
                    f"req/s ({load})",
                    True,
                ),
                Metric("p50_ms", "  p50 latency, ms", False, 2),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
            ),
            proxy_to_nginx_gateway_jwt,
            needs_wrk=True,
        )
    ]
