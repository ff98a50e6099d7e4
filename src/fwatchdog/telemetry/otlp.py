"""The watchdog's spans as OTLP: one small record per request, encoded straight to protobuf.

Why not the SDK's span objects: making and encoding one cost more than twice what the whole
request costs untraced (measured in the commit that made this module). The watchdog's span
always has the same shape (one SERVER span, a dozen attributes), so it is kept as a
`SpanRecord` and written out with the protobuf wire format by hand, what every span shares
encoded once. span_batches.py queues and batches the records (`OTEL_BSP_*`); the SDK does the
rest: its `Resource` reads `OTEL_RESOURCE_ATTRIBUTES`/`OTEL_SERVICE_NAME`, and its OTLP/HTTP
exporter's client posts the bytes (`OTEL_EXPORTER_OTLP_*`: endpoint, headers, TLS,
compression, retries).

Wire format: opentelemetry-proto's `trace/v1/trace.proto` and `collector/trace/v1`; the
tests decode what arrives with opentelemetry-proto itself.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

SERVER_KIND = 2  # Span.SpanKind.SPAN_KIND_SERVER
STATUS_ERROR = 2  # Status.StatusCode.STATUS_CODE_ERROR
FLAGS_HAS_IS_REMOTE = 0x100
FLAGS_IS_REMOTE = 0x200


class SpanRecord:
    """One request's span: what the encoder needs, nothing more."""

    __slots__ = (
        "call_id",
        "coldstart",
        "end_ns",
        "method",
        "parent_id",
        "path",
        "refused",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        parent_id: int,
        trace_state: str | None,
        sampled: bool,
        method: str,
        path: str,
        call_id: str | None,
        coldstart: bool,
        start_ns: int,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: a new trace
        self.trace_state = trace_state
        self.sampled = sampled
        self.method = method
        self.path = path
        self.call_id = call_id
        self.coldstart = coldstart
        self.start_ns = start_ns
        self.end_ns = 0
        self.status = 0
        self.refused = ""


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with field number `tag`."""
    return _varint(tag << 3 | 2) + _varint(len(payload)) + payload


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def _string_attribute(key: str) -> Callable[[str], bytes]:
    """An encoder of the attribute `key` with a string value, its key encoded once (this is
    what each span pays for its own path and call id)."""
    head = _delimited(1, _text(key)) + b"\x12"  # KeyValue.key, then the tag of .value

    def encode(value: str) -> bytes:
        text = value.encode("utf-8", "replace")
        any_value = b"\x0a" + _varint(len(text)) + text  # AnyValue.string_value
        key_value = head + _varint(len(any_value)) + any_value
        return b"\x4a" + _varint(len(key_value)) + key_value  # Span.attributes

    return encode


def _any_value(value: Any) -> bytes:
    """An AnyValue: string 1, bool 2, int 3, double 4, array 5 (a resource's attributes
    may be any of these)."""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return _delimited(5, b"".join(_delimited(1, _any_value(item)) for item in value))
    return _delimited(1, _text(str(value)))


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message: key 1, value 2."""
    return _delimited(1, _text(key)) + _delimited(2, _any_value(value))


def attribute(key: str, value: Any) -> bytes:
    """A Span's attribute (field 9)."""
    return _delimited(9, _key_value(key, value))


class SpanEncoder:
    """Writes batches of SpanRecords as one ExportTraceServiceRequest; what is the same for
    every span (the resource, the scope, the attributes shared by all) is encoded once."""

    def __init__(self, resource: Mapping[str, Any], scope: str, common: Mapping[str, Any]) -> None:
        attributes = b"".join(_delimited(1, _key_value(k, v)) for k, v in resource.items())
        self._resource = _delimited(1, attributes)  # ResourceSpans.resource
        self._scope = _delimited(1, _delimited(1, _text(scope)))  # ScopeSpans.scope
        self._common = b"".join(attribute(key, value) for key, value in common.items())
        self._statuses: dict[int, bytes] = {}
        self._methods: dict[str, bytes] = {}

    def encode(self, records: Sequence[SpanRecord]) -> bytes:
        spans = b"".join([_delimited(2, self.span(record)) for record in records])
        return _delimited(1, self._resource + _delimited(2, self._scope + spans))

    def span(self, record: SpanRecord) -> bytes:
        """One Span message (fields in number order but where noted)."""
        parent = record.parent_id
        status = record.status
        refused = record.refused
        parts = [
            b"\x0a\x10" + record.trace_id.to_bytes(16, "big"),  # 1 trace_id
            b"\x12\x08" + record.span_id.to_bytes(8, "big"),  # 2 span_id
        ]
        if record.trace_state:
            parts.append(_delimited(3, _text(record.trace_state)))
        if parent:
            parts.append(b"\x22\x08" + parent.to_bytes(8, "big"))  # 4 parent_span_id
        parts.append(self._method(record.method))  # 5 name, 6 kind, 9 the shared attributes
        parts.append(_TIMES(0x39, record.start_ns, 0x41, record.end_ns))  # 7, 8 (fixed64)
        parts.append(_url_path(record.path))  # 9 attributes
        parts.append(self._status(status))
        parts.append(_COLDSTART if record.coldstart else _NOT_COLDSTART)
        if record.call_id is not None:
            parts.append(_invocation_id(record.call_id))
        if refused or status >= 500:
            parts.append(attribute("error.type", str(status)))
            if refused:
                parts.append(attribute("fwatchdog.refused", refused))
            reason = refused or f"HTTP {status}"
            error = _delimited(2, _text(reason)) + b"\x18" + _varint(STATUS_ERROR)
            parts.append(_delimited(15, error))  # 15 status: message 2, code 3
        parts.append(_CHILD_FLAGS if parent else _ROOT_FLAGS)  # 16 flags
        return b"".join(parts)

    def _method(self, method: str) -> bytes:
        encoded = self._methods.get(method)
        if encoded is None:
            known = method in KNOWN_METHODS
            encoded = (
                _delimited(5, _text(method if known else "HTTP"))
                + b"\x30"
                + _varint(SERVER_KIND)
                + attribute("http.request.method", method if known else "_OTHER")
                + self._common
            )
            if not known:
                encoded += attribute("http.request.method_original", method)
            elif len(self._methods) < 64:
                self._methods[method] = encoded  # a client's made-up methods are not kept
        return encoded

    def _status(self, status: int) -> bytes:
        encoded = self._statuses.get(status)
        if encoded is None:
            encoded = self._statuses[status] = attribute("http.response.status_code", status)
        return encoded


# The methods the HTTP semantic conventions name; any other is `_OTHER`.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
)
_COLDSTART = attribute("faas.coldstart", True)
_NOT_COLDSTART = attribute("faas.coldstart", False)
_TIMES = struct.Struct("<BQBQ").pack
# Span.flags (field 16, fixed32): the parent's "is remote" is known; with a parent, it is.
_ROOT_FLAGS = b"\x85\x01" + struct.pack("<I", FLAGS_HAS_IS_REMOTE)
_CHILD_FLAGS = b"\x85\x01" + struct.pack("<I", FLAGS_HAS_IS_REMOTE | FLAGS_IS_REMOTE)
_url_path = _string_attribute("url.path")
_invocation_id = _string_attribute("faas.invocation_id")
