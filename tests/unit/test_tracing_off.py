"""Tracing off costs nothing: the serving modules never import OpenTelemetry, and only the
OTEL_* variables that ask for an exporter turn it on. The forked function's TRACEPARENT comes
from the request's trace context only when tracing is on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fwatchdog.http.request import Request
from fwatchdog.modes.forking.cgi_env import EnvironmentBuilder
from fwatchdog.telemetry.tracing import configured

HEAVY = ("opentelemetry", "google", "requests", "urllib3")


def modules_after(code: str, **environ: str) -> set[str]:
    """Top-level module names loaded after running `code` in a fresh interpreter."""
    listing = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **environ},
    ).stdout
    return {name.split(".")[0] for name in listing.split()}


def test_the_serving_modules_do_not_import_opentelemetry() -> None:
    loaded = modules_after(
        "import fwatchdog.cli, fwatchdog.router, fwatchdog.runtime.server, "
        "fwatchdog.modes.forking.cgi_env, fwatchdog.telemetry.tracing",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",  # on, but nothing made yet
    )
    assert "fwatchdog" in loaded
    assert not loaded & set(HEAVY)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "fn", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
    ],
)
def test_only_an_endpoint_turns_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert configured(environ) is on


def request_with(headers: list[tuple[str, str]]) -> Request:
    return Request("POST", "/", "/", "", headers, "1.1", True, body=None)  # type: ignore[arg-type]


CONTEXT = [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"), ("TraceState", "a=1")]


def test_traceparent_reaches_the_environment_only_when_tracing_is_on() -> None:
    stale = {"TRACEPARENT": "00-stale", "TRACESTATE": "stale=1"}
    on = EnvironmentBuilder({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", **stale})
    env = on.build(request_with(CONTEXT))
    assert env["TRACEPARENT"] == CONTEXT[0][1] and env["TRACESTATE"] == "a=1"
    assert "TRACESTATE" not in on.build(request_with(CONTEXT[:1]))
    assert "TRACEPARENT" not in on.build(request_with([]))

    off = EnvironmentBuilder({})
    env = off.build(request_with(CONTEXT))
    assert "TRACEPARENT" not in env and env["Http_Traceparent"] == CONTEXT[0][1]
