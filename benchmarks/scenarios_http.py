"""HTTP mode scenarios: the watchdog as a reverse proxy in front of a long-lived server.

`http-nginx` puts it in front of nginx answering a fixed 200 (the fast upstream: what is
measured is the proxy), and in the same run sends wrk straight at that nginx, as the ceiling.
`http-nginx-varied` is the same with a Cookie that differs on every request: no two requests
are the same bytes, so nothing is answered from what an earlier request taught the proxy.
`http-gateway` is shaped like the OpenFaaS gateway's calls: each request has a fresh
`X-Call-Id` (a uuid) and `X-Start-Time`, and an `X-Forwarded-For`, as real traffic does; in
the same run the same load goes through nginx itself as the proxy (keep-alive upstream, one
worker), the ceiling for any proxy where wrk, the proxy and the upstream share the cores, and
through `upstreams/forwarder.py`, a Python byte forwarder on uvloop that parses nothing, the
ceiling for any proxy written in Python.
`http-gateway-traced` is `http-gateway` with OpenTelemetry tracing on at 100% sampling,
exporting to an OTLP/HTTP sink on loopback (the Go of-watchdog has no tracing: its figure is
untraced, which is what the tracing issue compares with).
`http-gateway-node` is `http-gateway` with nginx answering as Node's http server does (Express,
the OpenFaaS node templates): `Keep-Alive: timeout=5` on every answer.
`http-python` puts it in front of Python's threading http.server (a realistic, slow upstream).
Both watchdogs start the upstream themselves through `fprocess` with `mode=http` and
`upstream_url`, the settings the Go of-watchdog takes too. wrk: -t1, POST of 100 bytes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks.harness import Watchdog, WatchdogBinary, free_port, running
from benchmarks.http_client import simple_request
from benchmarks.scenarios import Metric, Options, Scenario, ScenarioError
from benchmarks.wrk import WrkResult, run_wrk

UPSTREAMS = Path(__file__).resolve().parent / "upstreams"
NGINX = UPSTREAMS / "nginx.sh"
PYTHON_SERVER = UPSTREAMS / "python_fixed_200.py"
UPSTREAM_READY_TIMEOUT = 15.0


def _settings(fprocess: str) -> dict[str, str]:
    upstream_port = free_port()
    return {
        "mode": "http",
        "fprocess": fprocess,
        "upstream_url": f"http://127.0.0.1:{upstream_port}",
        "UPSTREAM_PORT": str(upstream_port),
    }


def _wait_for_upstream(watchdog: Watchdog) -> None:
    """Until a request goes through: Go reports healthy before its upstream listens."""
    deadline = time.monotonic() + UPSTREAM_READY_TIMEOUT
    while time.monotonic() < deadline:
        watchdog.check_alive()
        try:
            if simple_request(watchdog.port, "POST", "/", b"x", timeout=2.0).status == 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise ScenarioError(f"no 200 through the watchdog within {UPSTREAM_READY_TIMEOUT:.0f}s")


def _checked(result: WrkResult, what: str) -> dict[str, float]:
    if result.requests == 0 or result.non_2xx or result.socket_errors > result.requests // 100:
        raise ScenarioError(
            f"{what}: {result.non_2xx + result.socket_errors} of {result.requests} requests "
            f"failed ({result.non_2xx} non-2xx, {result.socket_errors} socket errors)"
        )
    return {
        "rps": result.requests_per_second,
        "p50_ms": result.p50_ms if result.p50_ms is not None else float("nan"),
        "p99_ms": result.p99_ms if result.p99_ms is not None else float("nan"),
    }


def proxy_to_nginx(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog to nginx, then wrk straight at the same nginx."""
    settings = _settings(str(NGINX))
    with running(binary, settings) as watchdog:
        _wait_for_upstream(watchdog)
        through = _checked(
            run_wrk(watchdog.port, options.duration, options.connections), "through the watchdog"
        )
        watchdog.check_alive()
        serving_rss = watchdog.serving_rss_mib()
        direct = _checked(
            run_wrk(int(settings["UPSTREAM_PORT"]), options.duration, options.connections),
            "straight at nginx",
        )
    return {
        **through,
        "serving_rss": serving_rss,
        "nginx_rps": direct["rps"],
        "nginx_p99_ms": direct["p99_ms"],
    }


def proxy_to_nginx_varied(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog to nginx, every request's bytes different."""
    with running(binary, _settings(str(NGINX))) as watchdog:
        _wait_for_upstream(watchdog)
        result = run_wrk(watchdog.port, options.duration, options.connections, varied=True)
        watchdog.check_alive()
    return _checked(result, "through the watchdog")


def proxy_to_nginx_gateway_shaped(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog to nginx, each request stamped as the OpenFaaS gateway does;
    then the same through two ceilings: nginx as the proxy (any proxy on this machine) and a
    Python byte forwarder (any proxy written in Python on uvloop)."""
    settings = _settings(str(NGINX))
    upstream_port = int(settings["UPSTREAM_PORT"])
    with running(binary, settings) as watchdog:
        _wait_for_upstream(watchdog)
        result = run_wrk(watchdog.port, options.duration, options.connections, gateway=True)
        watchdog.check_alive()
        ceilings = {}
        for name, command in CEILING_PROXIES.items():
            with _ceiling_proxy(command, upstream_port) as proxy_port:
                ceiling = run_wrk(proxy_port, options.duration, options.connections, gateway=True)
            ceilings[f"{name}_rps"] = _checked(ceiling, f"through {name}")["rps"]
    return {**_checked(result, "through the watchdog"), **ceilings}


# Proxies measured under the same load as the watchdog, as ceilings: listening on
# $PROXY_PORT, forwarding to $UPSTREAM_PORT.
CEILING_PROXIES = {
    "nginx_proxy": [str(NGINX), "proxy"],
    "python_forwarder": [sys.executable, str(UPSTREAMS / "forwarder.py")],
}


@contextmanager
def _ceiling_proxy(command: list[str], upstream_port: int) -> Iterator[int]:
    """`command` run as a proxy to `upstream_port`; yields the port it listens on."""
    port = free_port()
    environ = {**os.environ, "PROXY_PORT": str(port), "UPSTREAM_PORT": str(upstream_port)}
    proxy = subprocess.Popen(command, env=environ, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + UPSTREAM_READY_TIMEOUT
        while True:
            with contextlib.suppress(OSError, ValueError):
                if simple_request(port, "POST", "/", b"x", timeout=2.0).status == 200:
                    break
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise ScenarioError(f"{command[-1]} as a proxy did not start")
            time.sleep(0.01)
        yield port
    finally:
        proxy.terminate()
        proxy.wait(10)


def proxy_to_node_shaped_answers(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog, gateway-shaped calls, to nginx answering as Node does."""
    with running(binary, _settings(f"{NGINX} node")) as watchdog:
        _wait_for_upstream(watchdog)
        result = run_wrk(watchdog.port, options.duration, options.connections, gateway=True)
        watchdog.check_alive()
    return _checked(result, "through the watchdog")


@contextmanager
def _otlp_sink() -> Iterator[tuple[str, list[int]]]:
    """An OTLP/HTTP endpoint on loopback (its URL is yielded) that takes every export and keeps
    only their sizes, so that the watchdog's exporter pays its whole cost and the sink little."""
    sizes: list[int] = []

    class Sink(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(size)
            sizes.append(size)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sizes
    finally:
        server.shutdown()
        server.server_close()


def proxy_to_nginx_gateway_traced(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """`http-gateway` with tracing on, every request sampled, spans sent to a local sink."""
    with _otlp_sink() as (endpoint, exports):
        settings = {
            **_settings(str(NGINX)),
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        with running(binary, settings) as watchdog:
            _wait_for_upstream(watchdog)
            result = run_wrk(watchdog.port, options.duration, options.connections, gateway=True)
            watchdog.check_alive()
        exported = sum(exports)
    return {**_checked(result, "through the watchdog"), "exported_kib": exported / 1024}


def proxy_to_python(binary: WatchdogBinary, options: Options) -> dict[str, float]:
    """wrk through the watchdog to Python's threading http.server."""
    with running(binary, _settings(f"{sys.executable} {PYTHON_SERVER}")) as watchdog:
        _wait_for_upstream(watchdog)
        result = run_wrk(watchdog.port, options.duration, options.connections)
        watchdog.check_alive()
    return _checked(result, "through the watchdog")


def http_scenarios(options: Options) -> list[Scenario]:
    load = f"wrk -t1 -c{options.connections}, 100 B POST"
    return [
        Scenario(
            "http-nginx",
            (
                Metric("rps", f"http mode to nginx, req/s ({load})", True),
                Metric("p50_ms", "  p50 latency, ms", False, 2),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
                Metric("serving_rss", "  RSS of the serving processes after it, MiB", False, 1),
                Metric("nginx_rps", "  ceiling: wrk straight at nginx, req/s", True),
                Metric("nginx_p99_ms", "  ceiling: p99 latency, ms", False, 2),
            ),
            proxy_to_nginx,
            needs_wrk=True,
        ),
        Scenario(
            "http-nginx-varied",
            (
                Metric("rps", f"http mode to nginx, every request different, req/s ({load})", True),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
            ),
            proxy_to_nginx_varied,
            needs_wrk=True,
        ),
        Scenario(
            "http-gateway",
            (
                Metric("rps", f"http mode to nginx, gateway-shaped calls, req/s ({load})", True),
                Metric("p50_ms", "  p50 latency, ms", False, 2),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
                Metric("nginx_proxy_rps", "  ceiling: nginx itself as the proxy, req/s", True),
                Metric(
                    "python_forwarder_rps",
                    "  ceiling: a Python byte forwarder (no HTTP parsed), req/s",
                    True,
                ),
            ),
            proxy_to_nginx_gateway_shaped,
            needs_wrk=True,
        ),
        Scenario(
            "http-gateway-node",
            (
                Metric(
                    "rps",
                    f"http mode, gateway-shaped, answered as Node answers (Keep-Alive), req/s "
                    f"({load})",
                    True,
                ),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
            ),
            proxy_to_node_shaped_answers,
            needs_wrk=True,
        ),
        Scenario(
            "http-gateway-traced",
            (
                Metric(
                    "rps",
                    f"http mode to nginx, gateway-shaped, traced (100% to a local OTLP sink), "
                    f"req/s ({load})",
                    True,
                ),
                Metric("p50_ms", "  p50 latency, ms", False, 2),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
                Metric("exported_kib", "  spans exported to the sink, KiB", True, 0),
            ),
            proxy_to_nginx_gateway_traced,
            needs_wrk=True,
        ),
        Scenario(
            "http-python",
            (
                Metric("rps", f"http mode to Python http.server, req/s ({load})", True),
                Metric("p50_ms", "  p50 latency, ms", False, 2),
                Metric("p99_ms", "  p99 latency, ms", False, 2),
            ),
            proxy_to_python,
            needs_wrk=True,
        ),
    ]
