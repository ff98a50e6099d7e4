"""The hand-written OTLP encoding of the watchdog's spans, read back with opentelemetry-proto
(the wire format's own generated code), and the sampler's decisions against the SDK's."""

from __future__ import annotations

import random

import pytest

from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.otlp import SpanEncoder, SpanRecord
from fwatchdog.telemetry.tracing import Sampler, parse_traceparent

trace_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling")

RESOURCE = {
    "service.name": "fn",
    "process.pid": 4242,
    "negative": -5,
    "ratio": 0.25,
    "flag": True,
    "names": ("a", "b"),
}
COMMON = {"faas.trigger": "http", "server.port": 8080, "url.scheme": "http"}


def record(**changes: object) -> SpanRecord:
    span = SpanRecord(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        parent_id=0,
        trace_state=None,
        sampled=True,
        method="POST",
        path="/orders/7",
        call_id=None,
        coldstart=False,
        start_ns=1_765_000_000_000_000_000,
    )
    span.end_ns = span.start_ns + 1_500_000
    span.status = 200
    for name, value in changes.items():
        setattr(span, name, value)
    return span


def decode(*records: SpanRecord) -> tuple[dict[str, object], str, list[object]]:
    body = SpanEncoder(RESOURCE, "fwatchdog", COMMON).encode(list(records))
    request = trace_pb2.ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    resource = {
        kv.key: getattr(kv.value, kv.value.WhichOneof("value"))
        for kv in resource_spans.resource.attributes
    }
    (scope_spans,) = resource_spans.scope_spans
    return resource, scope_spans.scope.name, list(scope_spans.spans)


def attributes(span: object) -> dict[str, object]:
    return {
        kv.key: getattr(kv.value, kv.value.WhichOneof("value"))
        for kv in span.attributes  # type: ignore[attr-defined]
    }


def test_a_plain_span_decodes_to_what_was_recorded() -> None:
    resource, scope, (span,) = decode(record(coldstart=True, call_id="call-1"))
    assert resource["service.name"] == "fn" and resource["process.pid"] == 4242
    assert resource["negative"] == -5 and resource["ratio"] == 0.25 and resource["flag"] is True
    assert [v.string_value for v in resource["names"].values] == ["a", "b"]  # type: ignore[attr-defined]
    assert scope == "fwatchdog"
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.span_id.hex() == "00f067aa0ba902b7"
    assert span.parent_span_id == b"" and span.trace_state == ""
    assert (span.name, span.kind) == ("POST", 2)
    assert span.end_time_unix_nano - span.start_time_unix_nano == 1_500_000
    assert span.flags == 0x100
    assert span.status.code == 0
    assert attributes(span) == {
        **COMMON,
        "http.request.method": "POST",
        "url.path": "/orders/7",
        "http.response.status_code": 200,
        "faas.coldstart": True,
        "faas.invocation_id": "call-1",
    }


def test_a_child_of_a_caller_carries_its_parent_and_trace_state() -> None:
    _, _, (span,) = decode(record(parent_id=0xB7AD6B7169203331, trace_state="vendor=abc"))
    assert span.parent_span_id.hex() == "b7ad6b7169203331"
    assert span.trace_state == "vendor=abc"
    assert span.flags == 0x300  # the parent is known to be remote


def test_failures_and_refusals_are_error_spans_with_their_reason() -> None:
    _, _, (failed, refused, missing) = decode(
        record(status=504), record(status=429, refused="max_inflight reached"), record(status=404)
    )
    assert (failed.status.code, failed.status.message) == (2, "HTTP 504")
    assert attributes(failed)["error.type"] == "504"
    assert (refused.status.code, refused.status.message) == (2, "max_inflight reached")
    assert attributes(refused)["fwatchdog.refused"] == "max_inflight reached"
    assert missing.status.code == 0 and "error.type" not in attributes(missing)


def test_odd_methods_and_long_or_unicode_values_survive() -> None:
    long_path = "/" + "é" * 300  # lengths past one varint byte
    _, _, (span,) = decode(record(method="BREW", path=long_path, call_id="x" * 200))
    assert span.name == "HTTP"
    values = attributes(span)
    assert values["http.request.method"] == "_OTHER"
    assert values["http.request.method_original"] == "BREW"
    assert values["url.path"] == long_path and values["faas.invocation_id"] == "x" * 200


def test_many_spans_in_one_batch_keep_their_order() -> None:
    records = [record(span_id=index + 1, path=f"/{index}") for index in range(600)]
    _, _, spans = decode(*records)
    assert [attributes(span)["url.path"] for span in spans] == [f"/{i}" for i in range(600)]


@pytest.mark.parametrize(
    ("name", "arg", "sdk"),
    [
        ("always_on", "", sampling.ALWAYS_ON),
        ("always_off", "", sampling.ALWAYS_OFF),
        ("traceidratio", "0.3", sampling.TraceIdRatioBased(0.3)),
        ("parentbased_always_on", "", sampling.ParentBased(sampling.ALWAYS_ON)),
        ("parentbased_always_off", "", sampling.ParentBased(sampling.ALWAYS_OFF)),
        ("parentbased_traceidratio", "0.3", sampling.ParentBased(sampling.TraceIdRatioBased(0.3))),
    ],
)
def test_the_sampler_decides_as_the_sdk_does(name: str, arg: str, sdk: object) -> None:
    from opentelemetry import trace

    ours = Sampler.from_environment({"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": arg})
    chance = random.Random(7)
    for _ in range(400):
        trace_id = chance.getrandbits(128) or 1
        for parent_sampled in (None, True, False):
            context = None
            if parent_sampled is not None:
                parent = trace.SpanContext(
                    trace_id, 1, is_remote=True, trace_flags=trace.TraceFlags(int(parent_sampled))
                )
                context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            decision = sdk.should_sample(context, trace_id, "POST")  # type: ignore[attr-defined]
            assert ours.sampled(trace_id, parent_sampled) == decision.decision.is_sampled()


def test_the_default_sampler_is_parent_based_always_on() -> None:
    sampler = Sampler.from_environment({})
    assert sampler.parent_based and sampler.sampled(5, None) and not sampler.sampled(5, False)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER=jaeger_remote"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG=half",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG=1.5",
        ),
    ],
)
def test_a_sampler_it_cannot_honour_stops_the_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(StartupError, match=named):
        Sampler.from_environment(environ)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True),
        ),
        (
            " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\t",
            (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False),
        ),
        (
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later",
            (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True),
        ),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later", None),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),
        ("garbage", None),
    ],
)
def test_traceparent_is_read_as_the_w3c_propagator_reads_it(
    value: str, parsed: tuple[int, int, bool] | None
) -> None:
    assert parse_traceparent(value) == parsed
