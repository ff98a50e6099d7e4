"""OpenTelemetry tracing through the real watchdog: a real OTLP/HTTP collector on loopback
decodes what the watchdog's exporter sends (opentelemetry-proto), real functions report the
trace context they were given.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Watchdog,
    environment_of,
    free_port,
    function,
    health,
    http_mode_settings,
    wait_until,
)

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install -e '.[test,otel]'")
from issuer import Issuer, issuer_fixture  # noqa: F401  (the `issuer` fixture)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

Factory = Callable[..., Watchdog]
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER_PARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SERVER = 2  # Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2


@dataclass
class Span:
    """One span as the collector received it, ids in hex, attributes as plain values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


@dataclass
class Collector:
    """An OTLP/HTTP traces endpoint on loopback that keeps every span it is sent."""

    port: int
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    with self.lock:
                        self.spans.append(
                            Span(
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                span.kind,
                                span.status.code,
                                span.status.message,
                                {a.key: _value(a.value) for a in span.attributes},
                                resource,
                            )
                        )

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Span]:
        assert wait_until(lambda: len(self.spans) >= count, timeout), self.spans
        with self.lock:
            return list(self.spans)


@pytest.fixture
def collector() -> Iterator[Collector]:
    port = free_port()
    received = Collector(port)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.path == "/v1/traces"
            received.receive(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


def traced(collector: Collector, **settings: str) -> dict[str, str]:
    """Settings that turn tracing on towards `collector`, exporting every 50 ms."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OPENFAAS_NAME": "traced-fn",
        **settings,
    }


def ready(watchdog: Watchdog) -> Watchdog:
    assert wait_until(lambda: health(watchdog) == 200, 15), watchdog.log()
    return watchdog


def traceparent_parts(value: str) -> tuple[str, str, str, str]:
    version, trace_id, span_id, flags = value.split("-")
    return version, trace_id, span_id, flags


def test_streaming_span_joins_the_caller_s_trace_and_the_function_gets_traceparent(
    watchdog_factory: Factory, collector: Collector
) -> None:
    watchdog = ready(watchdog_factory(fprocess="env", log_format="json", **traced(collector)))
    status, _, body = watchdog.request(
        "POST",
        "/orders/7?x=1",
        b"hi",
        {"traceparent": CALLER_PARENT, "tracestate": "vendor=abc", "X-Call-Id": "call-1"},
    )
    assert status == 200
    env = environment_of(body)
    _, trace_id, span_id, flags = traceparent_parts(env["TRACEPARENT"])
    assert trace_id == CALLER_TRACE and span_id != CALLER_SPAN and int(flags, 16) & 1
    assert env["TRACESTATE"] == "vendor=abc"
    assert env["Http_Traceparent"] == env["TRACEPARENT"]  # the caller's is replaced everywhere

    (span,) = collector.wait_for(1)
    assert (span.trace_id, span.parent_span_id, span.span_id) == (
        CALLER_TRACE,
        CALLER_SPAN,
        span_id,
    )
    assert span.kind == SERVER and span.name == "POST"
    attributes = span.attributes
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/orders/7"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.port"] == watchdog.port
    assert attributes["faas.trigger"] == "http"
    assert attributes["faas.invocation_id"] == "call-1"
    assert attributes["faas.coldstart"] is True
    assert span.status_code != STATUS_ERROR
    # What all spans of the process share is on the resource (faas.name is a resource
    # attribute in the FaaS conventions).
    assert span.resource["service.name"] == "traced-fn"
    assert span.resource["faas.name"] == "traced-fn"
    assert span.resource["fwatchdog.mode"] == "streaming"

    # The JSON request line names the span.
    line = next(
        json.loads(text)
        for text in watchdog.wait_for_log('"trace_id"').splitlines()
        if '"trace_id"' in text
    )
    assert (line["trace_id"], line["span_id"]) == (CALLER_TRACE, span_id)

    # A second request without a traceparent: a new trace, no longer a cold start.
    status, _, body = watchdog.request("GET", "/again")
    assert status == 200
    second = collector.wait_for(2)[1]
    assert second.parent_span_id == "" and second.trace_id != CALLER_TRACE
    assert second.attributes["faas.coldstart"] is False
    assert "faas.invocation_id" not in second.attributes
    assert environment_of(body)["TRACEPARENT"].split("-")[1] == second.trace_id


def test_probes_and_metrics_are_not_traced(watchdog_factory: Factory, collector: Collector) -> None:
    watchdog = ready(watchdog_factory(fprocess="cat", **traced(collector)))
    for path in ("/_/health", "/_/ready"):
        assert watchdog.request("GET", path)[0] == 200
    assert "http_requests_total" in watchdog.metrics()
    assert watchdog.request("POST", "/last", b"x")[0] == 200
    time.sleep(0.5)  # ten export rounds: anything else would have arrived
    spans = collector.wait_for(1)
    assert [span.attributes["url.path"] for span in spans] == ["/last"]


def test_serializing_function_gets_traceparent_and_a_failure_is_an_error_span(
    watchdog_factory: Factory, collector: Collector, tmp_path: Path
) -> None:
    script = tmp_path / "fn.sh"
    script.write_text('#!/bin/sh\nenv\n[ "$Http_Path" = /fail ] && exit 3\nexit 0\n')
    script.chmod(0o755)
    watchdog = ready(
        watchdog_factory(mode="serializing", fprocess=str(script), **traced(collector))
    )
    status, _, body = watchdog.request("POST", "/ok", b"x", {"traceparent": CALLER_PARENT})
    assert status == 200
    span_id = traceparent_parts(environment_of(body)["TRACEPARENT"])[2]
    assert "TRACESTATE" not in environment_of(body)
    assert watchdog.request("POST", "/fail", b"x")[0] == 500
    ok, failed = collector.wait_for(2)
    assert (ok.trace_id, ok.span_id, ok.parent_span_id) == (CALLER_TRACE, span_id, CALLER_SPAN)
    assert ok.resource["fwatchdog.mode"] == "serializing"
    assert failed.attributes["http.response.status_code"] == 500
    assert failed.status_code == STATUS_ERROR
    assert failed.attributes["error.type"] == "500"


def echoed_traceparents(body: bytes) -> list[str]:
    return [value for name, value in json.loads(body)["headers"] if name.lower() == "traceparent"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http_mode_upstream_gets_our_span_as_parent_in_every_worker(
    watchdog_factory: Factory, collector: Collector, workers: str
) -> None:
    watchdog = ready(
        watchdog_factory(**http_mode_settings(http_workers=workers), **traced(collector))
    )
    count = 12
    sent: list[str] = []
    for _ in range(count):  # a connection each, so that both workers get some
        status, _, body = watchdog.request("GET", "/echo", headers={"traceparent": CALLER_PARENT})
        assert status == 200
        (parent,) = echoed_traceparents(body)  # replaced, not added beside the caller's
        _, trace_id, span_id, _ = traceparent_parts(parent)
        assert trace_id == CALLER_TRACE and span_id != CALLER_SPAN
        sent.append(span_id)
    spans = collector.wait_for(count)
    assert sorted(span.span_id for span in spans) == sorted(sent)
    assert all(span.parent_span_id == CALLER_SPAN for span in spans)
    assert {span.resource["fwatchdog.mode"] for span in spans} == {"http"}
    if workers == "2":
        assert len({span.resource["process.pid"] for span in spans}) == 2
        # Each process has its own first invocation.
        assert sum(span.attributes["faas.coldstart"] for span in spans) == 2


def test_afterburn_function_gets_our_span_as_parent(
    watchdog_factory: Factory, collector: Collector
) -> None:
    watchdog = ready(
        watchdog_factory(
            mode="afterburn",
            fprocess=f"{sys.executable} {function('ab_trace_context.py')}",
            **traced(collector),
        )
    )
    status, _, body = watchdog.request(
        "POST", "/", b"x", {"traceparent": CALLER_PARENT, "tracestate": "a=1"}
    )
    assert status == 200
    seen = json.loads(body)
    _, trace_id, span_id, _ = traceparent_parts(seen["traceparent"])
    assert trace_id == CALLER_TRACE and seen["tracestate"] == "a=1"
    (span,) = collector.wait_for(1)
    assert (span.span_id, span.parent_span_id) == (span_id, CALLER_SPAN)
    assert span.resource["fwatchdog.mode"] == "afterburn"


def test_max_inflight_refusal_is_an_error_span_with_its_reason(
    watchdog_factory: Factory, collector: Collector
) -> None:
    watchdog = ready(watchdog_factory(**http_mode_settings(max_inflight="1"), **traced(collector)))
    holder = threading.Thread(target=lambda: watchdog.request("GET", "/sleep?s=1.5"))
    holder.start()
    try:
        assert wait_until(lambda: "http_requests_in_flight 1" in watchdog.metrics(), 5)
        assert watchdog.request("GET", "/refused")[0] == 429
    finally:
        holder.join()
    spans = collector.wait_for(2)
    refused = next(span for span in spans if span.attributes["url.path"] == "/refused")
    assert refused.attributes["http.response.status_code"] == 429
    assert refused.status_code == STATUS_ERROR
    assert refused.status_message == "max_inflight reached"
    assert refused.attributes["fwatchdog.refused"] == "max_inflight reached"


def test_jwt_refusal_is_an_error_span_with_its_reason(
    watchdog_factory: Factory, collector: Collector, issuer: Issuer
) -> None:
    watchdog = ready(
        watchdog_factory(
            fprocess="cat",
            jwt_auth="true",
            jwt_auth_issuer_url=issuer.url,
            OPENFAAS_NAMESPACE="openfaas-fn",
            **traced(collector),
        )
    )
    assert watchdog.request("POST", "/", b"x", {"traceparent": CALLER_PARENT})[0] == 401
    (span,) = collector.wait_for(1)
    assert span.parent_span_id == CALLER_SPAN
    assert span.attributes["http.response.status_code"] == 401
    assert span.status_code == STATUS_ERROR and span.status_message
    assert span.attributes["fwatchdog.refused"] == span.status_message


@pytest.mark.parametrize("collector_is", ["down", "silent"])
def test_a_collector_that_is_down_or_silent_costs_requests_nothing(
    watchdog_factory: Factory, collector_is: str
) -> None:
    # down: nothing listens; silent: the kernel takes connections and bytes, nobody answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    if collector_is == "silent":
        silent.listen(8)
    watchdog = ready(
        watchdog_factory(
            fprocess="cat",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}",
            OTEL_BSP_SCHEDULE_DELAY="20",
            OTEL_BSP_MAX_QUEUE_SIZE="64",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="16",
        )
    )
    started = time.monotonic()
    for index in range(200):
        status, _, body = watchdog.request("POST", "/", str(index).encode(), timeout=5)
        assert (status, body) == (200, str(index).encode())
    elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # generous: about 1 s here, unloaded
    log = watchdog.wait_for_log("fwatchdog: tracing:", timeout=15)
    assert log.count("fwatchdog: tracing:") == 1  # at most one line a minute
    started = time.monotonic()
    assert watchdog.terminate(timeout=15) == 0
    assert time.monotonic() - started < 8  # the flush gives up after FLUSH_SECONDS
    silent.close()


@pytest.mark.parametrize("http_workers", ["", "2"])
def test_queued_spans_are_flushed_on_sigterm(
    watchdog_factory: Factory, collector: Collector, http_workers: str
) -> None:
    settings = (
        http_mode_settings(http_workers=http_workers) if http_workers else {"fprocess": "cat"}
    )
    watchdog = ready(
        watchdog_factory(**settings, **traced(collector, OTEL_BSP_SCHEDULE_DELAY="600000"))
    )
    count = 10  # a connection each: with http_workers, both processes hold some
    for _ in range(count):
        assert watchdog.request("POST", "/echo", b"x")[0] == 200
    time.sleep(0.3)
    assert collector.spans == []  # still queued: the next export is ten minutes away
    assert watchdog.terminate(timeout=15) == 0
    spans = collector.wait_for(count, timeout=1)  # they arrived before the process exited
    assert {span.attributes["url.path"] for span in spans} == {"/echo"}
    if http_workers:
        assert len({span.resource["process.pid"] for span in spans}) == 2


def test_the_start_fails_clearly_without_the_sdk(watchdog_factory: Factory, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "opentelemetry").mkdir(parents=True)
    (shadow / "opentelemetry" / "__init__.py").write_text("")  # hides the real namespace
    root = Path(__file__).resolve().parents[2]
    watchdog = watchdog_factory(
        wait=False,
        fprocess="cat",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        PYTHONPATH=f"{shadow}:{root / 'src'}",
    )
    assert watchdog.process.wait(15) == 1
    log = watchdog.log()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in log and "fwatchdog[otel]" in log, log


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER=console"),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "64"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512: a batch cannot be larger than "
            "OTEL_BSP_MAX_QUEUE_SIZE=64",
        ),
        ({"OTEL_BSP_SCHEDULE_DELAY": "soon"}, "OTEL_BSP_SCHEDULE_DELAY=soon: a whole number"),
    ],
)
def test_settings_the_exporter_cannot_honour_stop_the_start(
    watchdog_factory: Factory, settings: dict[str, str], named: str
) -> None:
    watchdog = watchdog_factory(
        wait=False, fprocess="cat", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", **settings
    )
    assert watchdog.process.wait(15) == 1
    assert named in watchdog.log()


def test_otel_traces_exporter_none_turns_tracing_off(
    watchdog_factory: Factory, collector: Collector
) -> None:
    watchdog = ready(
        watchdog_factory(fprocess="env", **traced(collector, OTEL_TRACES_EXPORTER="none"))
    )
    status, _, body = watchdog.request("POST", "/", b"x", {"traceparent": CALLER_PARENT})
    assert status == 200
    env = environment_of(body)
    assert "TRACEPARENT" not in env and env["Http_Traceparent"] == CALLER_PARENT
    time.sleep(0.3)
    assert collector.spans == []


def test_static_mode_requests_are_traced(
    watchdog_factory: Factory, collector: Collector, tmp_path: Path
) -> None:
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_text("<p>hi</p>")
    watchdog = ready(watchdog_factory(mode="static", static_path=str(root), **traced(collector)))
    assert watchdog.request("GET", "/", headers={"traceparent": CALLER_PARENT})[0] == 200
    assert watchdog.request("GET", "/missing")[0] == 404
    # Static mode serves in a process per CPU, each exporting its own: in any order.
    spans = {span.attributes["url.path"]: span for span in collector.wait_for(2)}
    found, missing = spans["/"], spans["/missing"]
    assert found.parent_span_id == CALLER_SPAN and found.resource["fwatchdog.mode"] == "static"
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status_code != STATUS_ERROR  # a client's error is not the server's


def test_http_mode_upstream_gets_one_traceparent_when_the_caller_sent_none(
    watchdog_factory: Factory, collector: Collector
) -> None:
    # Without a caller's context the request's own bytes can be passed on with ours added;
    # a tracestate without a traceparent belongs to no trace and is dropped.
    watchdog = ready(watchdog_factory(**http_mode_settings(), **traced(collector)))
    sent = []
    for headers in ({}, {"tracestate": "stale=1"}):
        status, _, body = watchdog.request("GET", "/echo", headers=headers)
        assert status == 200
        (parent,) = echoed_traceparents(body)
        seen = [name.lower() for name, _ in json.loads(body)["headers"]]
        assert "tracestate" not in seen
        sent.append(traceparent_parts(parent))
    spans = collector.wait_for(2)
    assert sorted((s.trace_id, s.span_id) for s in spans) == sorted((t, s) for _, t, s, _ in sent)
    assert all(span.parent_span_id == "" for span in spans)


def test_an_unsampled_request_hands_on_its_context_and_exports_nothing(
    watchdog_factory: Factory, collector: Collector
) -> None:
    # parentbased_always_on (the default) follows a caller that did not sample; always_off
    # samples nothing. Either way the function still gets a context naming our span.
    for settings, headers in (
        ({}, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, {}),
    ):
        watchdog = ready(watchdog_factory(fprocess="env", **traced(collector, **settings)))
        status, _, body = watchdog.request("POST", "/", b"x", headers)
        assert status == 200
        _, trace_id, span_id, flags = traceparent_parts(environment_of(body)["TRACEPARENT"])
        assert flags == "00" and span_id != CALLER_SPAN
        assert trace_id == CALLER_TRACE if headers else trace_id != CALLER_TRACE
        assert watchdog.request("POST", "/sampled?", b"x", {"traceparent": CALLER_PARENT})[0] == 200
        watchdog.terminate(timeout=15)
    spans = collector.wait_for(1)
    # Only the request whose caller sampled it, under the parent-based default.
    assert [span.attributes["url.path"] for span in spans] == ["/sampled"]
