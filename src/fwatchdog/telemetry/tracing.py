"""OpenTelemetry tracing: one SERVER span per function request, its context handed on.

Off unless OpenTelemetry's own environment variables ask for it (`configured`): then the
OpenTelemetry SDK and its OTLP/HTTP exporter (the `otel` extra) are imported, and they read
the rest of their settings (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES`, ...) as
the SDK defines them; `OTEL_BSP_*` are read by span_batches.py as the SDK reads them;
`OTEL_TRACES_SAMPLER`(`_ARG`) is decided here as the SDK decides it, for the samplers it names
(others are refused at start).
Off, this module imports nothing beyond the standard library and the router pays one
`is None` check per request. Spans are recorded and encoded by `otlp.py`, not as SDK spans.

The span joins a W3C `traceparent`/`tracestate` the request carries (else a new trace starts,
subject to the sampler), and the request's own `traceparent`/`tracestate` are replaced by
ones naming the watchdog's span, so that whatever the mode hands the request to (http mode's
upstream, afterburn's process, a forked process's `Http_Traceparent` and `TRACEPARENT`)
continues the trace under it. Spans are encoded and exported in batches on a thread of
their own (span_batches.py), never on the request path; a collector that is down costs a
bounded queue and a log line.

Naming: the watchdog knows no route template (the function routes as it likes), so the span
is named `<METHOD>` as the HTTP semantic conventions ask when there is none, and carries no
`http.route`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fwatchdog.http.request import FieldNames
from fwatchdog.settings.errors import StartupError

if TYPE_CHECKING:
    from fwatchdog.http.request import Request
    from fwatchdog.settings.config import Config
    from fwatchdog.telemetry.logs import Log
    from fwatchdog.telemetry.otlp import SpanRecord
    from fwatchdog.telemetry.span_batches import SpanBatches

# At SIGTERM, how long queued spans get to reach the collector (inside the drain's budget).
FLUSH_SECONDS = 3.0
# The SDK's own complaints (a collector down) are passed on at most this often.
COMPLAINT_INTERVAL = 60.0


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether OpenTelemetry's variables ask for traces: an OTLP endpoint is set and
    OTEL_TRACES_EXPORTER is not `none`."""
    if not (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        return False
    return "none" not in _exporters(environ)


def _exporters(environ: Mapping[str, str]) -> list[str]:
    text = environ.get("OTEL_TRACES_EXPORTER", "") or "otlp"
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def from_environment(config: Config, log: Log) -> Tracing | None:
    """The tracer this process needs, or None when tracing is off (nothing imported then)."""
    if not configured():
        return None
    return Tracing(config, log)


class Tracing:
    """Opens and closes the span of each function request: a SpanRecord kept on the request
    while it is answered, queued for export (span_batches.py) when it ends."""

    def __init__(self, config: Config, log: Log) -> None:
        _check_settings()
        self._sampler = Sampler.from_environment(os.environ)
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource

            from fwatchdog.telemetry.otlp import SpanEncoder, SpanRecord
            from fwatchdog.telemetry.span_batches import BatchSettings, SpanBatches
        except ImportError as error:
            raise StartupError(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set (tracing on) but the OpenTelemetry SDK is "
                f"not installed ({error.name} missing): pip install 'fwatchdog[otel]', or set "
                "OTEL_TRACES_EXPORTER=none"
            ) from None
        _pass_complaints_to(log)
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            name = config.openfaas_name or "fwatchdog"
            resource = resource.merge(Resource({"service.name": name}))
        # What every span of this process shares goes on the resource, sent once a batch:
        # faas.name is a resource attribute in the FaaS conventions; the pid tells http_workers
        # apart.
        resource = resource.merge(
            Resource(
                {
                    "faas.name": config.openfaas_name or str(resource.attributes["service.name"]),
                    "fwatchdog.mode": config.mode,
                    "process.pid": os.getpid(),
                }
            )
        )
        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
        send = getattr(getattr(exporter, "_client", None), "export", None)
        if send is None:  # the client that takes encoded bytes came with 1.45
            raise StartupError(
                "tracing: the installed opentelemetry-exporter-otlp-proto-http cannot send "
                "encoded spans; fwatchdog needs 1.45: pip install 'fwatchdog[otel]'"
            )
        # Every attribute costs to encode: the required and the FaaS ones only.
        common = {"faas.trigger": "http", "server.port": config.port, "url.scheme": "http"}
        encoder = SpanEncoder(dict(resource.attributes), "fwatchdog", common)
        self._batches: SpanBatches[SpanRecord] = SpanBatches(
            BatchSettings.from_environment(os.environ),
            lambda records: send(encoder.encode(records)),  # failures: the client logs them
            logging.getLogger("opentelemetry.fwatchdog").warning,
        )
        self._stop_exporter: Callable[[], object] = exporter.shutdown
        self._span_record = SpanRecord
        self._coldstart = True
        self._log_ids = log.json_format

    def start(self, request: Request) -> None:
        """Open the request's span (a child of its traceparent, if any) and make the
        request's trace context name it, for whatever the mode passes the request to."""
        traceparent, tracestate, call_id = request.headers_named(_FIELDS_READ)
        parent = None if traceparent is None else parse_traceparent(traceparent)
        if parent is None:
            trace_id, parent_id, parent_sampled = _new_id(128), 0, None
            trace_state = None  # W3C: a tracestate without a valid traceparent is dropped
        else:
            trace_id, parent_id, parent_sampled = parent
            states = [] if tracestate is None else request.header_values("tracestate")
            trace_state = ",".join(states) or None
        sampled = self._sampler.sampled(trace_id, parent_sampled)
        span_id = _new_id(64)
        request.span = self._span_record(
            trace_id,
            span_id,
            parent_id,
            trace_state,
            sampled,
            request.method,
            request.path,
            call_id,
            self._coldstart,
            time.time_ns(),
        )
        self._coldstart = False
        context = f"00-{trace_id:032x}-{span_id:016x}-0{int(sampled)}"
        if traceparent is None and tracestate is None:
            request.add_headers([("traceparent", context)])  # nothing of the caller's to drop
        else:
            request.replace_headers([("traceparent", context), ("tracestate", trace_state)])

    def end(self, request: Request, status: int, refused: str = "") -> tuple[str, str] | None:
        """Close the request's span with the status the log line has (499: the client left
        first); `refused`: why the watchdog answered itself (jwt_auth, max_inflight). Returns
        the trace and span ids for a JSON log line, else None."""
        record: SpanRecord | None = request.span
        if record is None:
            return None
        request.span = None
        if record.sampled:
            record.end_ns = time.time_ns()
            record.status = status
            record.refused = refused
            self._batches.add(record)
        if not self._log_ids:
            return None
        return f"{record.trace_id:032x}", f"{record.span_id:016x}"

    def shutdown(self) -> None:
        """Send the spans still queued (at most FLUSH_SECONDS), then stop the exporter (which
        ends the retries of an export still trying)."""
        self._batches.shutdown(FLUSH_SECONDS)
        self._stop_exporter()


_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*\Z"
)


def parse_traceparent(value: str) -> tuple[int, int, bool] | None:
    """A W3C traceparent's trace id, parent span id and sampled flag, or None when it is not
    one (read as the SDK's propagator reads it: a later version may add fields, 00 may not)."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace, 16), int(span, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


# What the span needs of a request, in one pass over its fields.
_FIELDS_READ = FieldNames("traceparent", "tracestate", "x-call-id")


def _new_id(bits: int) -> int:
    """A random trace (128) or span (64) id; zero means "none" in both."""
    while True:
        value = random.getrandbits(bits)
        if value:
            return value


class Sampler:
    """The sampling decision for the samplers OTEL_TRACES_SAMPLER names, as the SDK makes it:
    a parent-based one follows a caller's sampled flag; a root decides by ratio on the low 64
    bits of the trace id (always_on and always_off are the ratios 1 and 0)."""

    ID_RANGE = 1 << 64

    def __init__(self, parent_based: bool, ratio: float) -> None:
        self.parent_based = parent_based
        self._bound = round(ratio * self.ID_RANGE)

    def sampled(self, trace_id: int, parent_sampled: bool | None) -> bool:
        if parent_sampled is not None and self.parent_based:
            return parent_sampled
        return (trace_id & (self.ID_RANGE - 1)) < self._bound

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Sampler:
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        if root == "always_on":
            return cls(parent_based, 1.0)
        if root == "always_off":
            return cls(parent_based, 0.0)
        if root != "traceidratio":
            raise StartupError(
                f"OTEL_TRACES_SAMPLER={name}: fwatchdog samples with always_on, always_off, "
                "traceidratio or their parentbased_ forms"
            )
        text = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip() or "1.0"
        try:
            ratio = float(text)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise StartupError(
                f"OTEL_TRACES_SAMPLER_ARG={text}: the ratio of {name} is a number from 0 to 1"
            )
        return cls(parent_based, ratio)


def _check_settings() -> None:
    """What the SDK would ignore or the exporter cannot do: an error naming the variable."""
    exporters = _exporters(os.environ)
    if "otlp" not in exporters:
        raise StartupError(
            f"OTEL_TRACES_EXPORTER={','.join(exporters)}: fwatchdog exports traces with otlp "
            "only (or none)"
        )
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = os.environ.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise StartupError(
                    f"{name}={protocol}: fwatchdog exports traces with http/protobuf only"
                )
            break


class _Complaints(logging.Handler):
    """The SDK's warnings and errors (a collector down, a full queue) as the watchdog's own
    error lines, at most one per COMPLAINT_INTERVAL: they come from the export thread, so they
    are handed to the event loop, which owns the log."""

    def __init__(self, log: Log, loop: asyncio.AbstractEventLoop | None) -> None:
        super().__init__(logging.WARNING)
        self._log = log
        self._loop = loop
        self._next = 0.0
        self._dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now < self._next:
            self._dropped += 1
            return
        self._next = now + COMPLAINT_INTERVAL
        more = f" ({self._dropped} more since)" if self._dropped else ""
        self._dropped = 0
        line = f"fwatchdog: tracing: {record.getMessage()}{more}"
        if self._loop is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            self._loop.call_soon_threadsafe(self._log.error, line)


def _pass_complaints_to(log: Log) -> None:
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    logger = logging.getLogger("opentelemetry")
    logger.handlers[:] = [_Complaints(log, loop)]
    logger.propagate = False
