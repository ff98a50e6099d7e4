"""OpenTelemetry tracing: one SERVER span per function request, its context handed on.

Off unless OpenTelemetry's own environment variables ask for it (`configured`): then the
OpenTelemetry SDK and its OTLP/HTTP exporter (the `otel` extra) are imported, and they read
the rest of their settings (`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_RESOURCE_ATTRIBUTES`, ...) as the SDK defines them. Off, this module imports nothing
beyond the standard library and the router pays one `is None` check per request.

The span joins a W3C `traceparent`/`tracestate` the request carries (else a new trace starts,
subject to the sampler), and the request's own `traceparent`/`tracestate` are replaced by
ones naming the watchdog's span, so that whatever the mode hands the request to (http mode's
upstream, afterburn's process, a forked process's `Http_Traceparent` and `TRACEPARENT`)
continues the trace under it. Spans are exported in batches by the SDK's own thread, never
on the request path; a collector that is down costs the SDK's bounded queue and a log line.

Naming: the watchdog knows no route template (the function routes as it likes), so the span
is named `<METHOD>` as the HTTP semantic conventions ask when there is none, and carries no
`http.route`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fwatchdog.settings.errors import StartupError

if TYPE_CHECKING:
    from fwatchdog.http.request import Request
    from fwatchdog.settings.config import Config
    from fwatchdog.telemetry.logs import Log

# The methods the HTTP semantic conventions name; any other is `_OTHER`.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
# At SIGTERM, how long queued spans get to reach the collector (inside the drain's budget).
FLUSH_SECONDS = 3.0
# The SDK's own complaints (a collector down) are passed on at most this often.
COMPLAINT_INTERVAL = 60.0
# The W3C trace context fields, replaced on the way in by ones naming our span.
_CONTEXT_FIELDS = frozenset(("traceparent", "tracestate"))


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
    """Starts and ends the span of each function request, keyed by the request object while
    it is in flight (Request has no room for it, and the router ends it from a callback)."""

    def __init__(self, config: Config, log: Log) -> None:
        _check_settings()
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
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
        # The SDK reads OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and OTEL_EXPORTER_OTLP_* itself.
        try:
            self._processor = BatchSpanProcessor(OTLPSpanExporter())
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        except ValueError as error:  # OTEL_BSP_* values that do not fit together
            raise StartupError(f"OpenTelemetry settings (OTEL_*): {error}") from None
        provider.add_span_processor(self._processor)
        self._provider = provider
        self._tracer = provider.get_tracer("fwatchdog")
        self._propagator = TraceContextTextMapPropagator()
        self._in_context = trace.set_span_in_context
        self._server_kind = trace.SpanKind.SERVER
        from opentelemetry.trace import Status, StatusCode

        def error_status(reason: str) -> Status:
            return Status(StatusCode.ERROR, reason)

        self._error_status = error_status
        self._spans: dict[int, Any] = {}
        self._coldstart = True
        self._log_ids = log.json_format
        # Every attribute costs a few microseconds to make and more to encode, in the
        # serving process: the required and the FaaS ones only.
        self._common = {"faas.trigger": "http", "server.port": config.port, "url.scheme": "http"}

    def start(self, request: Request) -> None:
        """Open the request's span (a child of its traceparent, if any) and make the
        request's trace context name it, for whatever the mode passes the request to."""
        incoming: dict[str, str] = {}
        call_id: str | None = None
        kept: list[tuple[str, str]] = []
        for name, value in request.headers:
            lowered = name.lower()
            if lowered in _CONTEXT_FIELDS:
                incoming.setdefault(lowered, value)
                continue
            if lowered == "x-call-id" and call_id is None:
                call_id = value
            kept.append((name, value))
        method = request.method
        known = method in KNOWN_METHODS
        attributes: dict[str, Any] = {
            **self._common,
            "http.request.method": method if known else "_OTHER",
            "url.path": request.path,
            "faas.coldstart": self._coldstart,
        }
        self._coldstart = False
        if not known:
            attributes["http.request.method_original"] = method
        if call_id is not None:
            attributes["faas.invocation_id"] = call_id
        parent = self._propagator.extract(incoming) if incoming else None
        span = self._tracer.start_span(
            method if known else "HTTP",
            parent,
            kind=self._server_kind,
            attributes=attributes,
        )
        self._spans[id(request)] = span
        outgoing: dict[str, str] = {}
        self._propagator.inject(outgoing, self._in_context(span))
        kept.extend(outgoing.items())
        request.headers = kept
        request.raw = None  # its own bytes carry the caller's context, not ours

    def end(self, request: Request, status: int, refused: str = "") -> tuple[str, str] | None:
        """Close the request's span with the status the log line has (499: the client left
        first); `refused`: why the watchdog answered itself (jwt_auth, max_inflight). Returns
        the trace and span ids for a JSON log line, else None."""
        span = self._spans.pop(id(request), None)
        if span is None:
            return None
        span.set_attribute("http.response.status_code", status)
        if refused or status >= 500:
            reason = refused or f"HTTP {status}"
            span.set_attribute("error.type", str(status))
            if refused:
                span.set_attribute("fwatchdog.refused", refused)
            span.set_status(self._error_status(reason))
        span.end()
        if not self._log_ids:
            return None
        context = span.get_span_context()
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def shutdown(self) -> None:
        """Send the spans still queued (at most FLUSH_SECONDS), then stop the export thread."""
        # The SDK's shutdown waits up to 30 s for a collector that is down; a daemon thread
        # lets it try while we wait only FLUSH_SECONDS (its thread dies with the process).
        stopping = threading.Thread(target=self._provider.shutdown, daemon=True)
        stopping.start()
        stopping.join(FLUSH_SECONDS)


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
