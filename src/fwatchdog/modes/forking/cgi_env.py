"""The environment a forked function sees: the watchdog's own, plus the request as variables.

Two sets of names, both on by default:

- the Go of-watchdog's: `Http_<Canonical_Header_Name>` (first value), `Http_Method`,
  `Http_Path` (decoded), `Http_Query` (raw, only when non-empty); `cgi_headers=false` turns
  these off, as in the classic watchdog;
- RFC 3875 (CGI/1.1) meta-variables, so that any CGI program, or a WSGI app run through
  `wsgiref.handlers.CGIHandler`, reads the request unchanged: `GATEWAY_INTERFACE`,
  `REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`, `CONTENT_LENGTH`,
  `SERVER_*`, `REMOTE_*` and `HTTP_<NAME>` for every header but Transfer-Encoding (stdin is
  never chunked).

A `Proxy` request header is never passed on under either name (httpoxy, CVE-2016-5385): a
function's HTTP client would take `HTTP_PROXY`, and Python's `Http_Proxy` too, as its outbound
proxy.
"""

from __future__ import annotations

import os
import socket

from fwatchdog import __version__
from fwatchdog.http.request import Request
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.tracing import configured as tracing_configured

SERVER_SOFTWARE = f"fwatchdog/{__version__}"
# Headers that RFC 3875 passes as CONTENT_* only; Transfer-Encoding, because stdin never
# carries chunked framing (WSGI servers read HTTP_TRANSFER_ENCODING=chunked as "ignore
# CONTENT_LENGTH"); and Proxy, which must never be passed.
_NOT_AS_HTTP = frozenset({"content-type", "content-length", "transfer-encoding", "proxy"})
_NAME_CACHE_LIMIT = 4096


def canonical_mime_name(name: str) -> str:
    """Go's textproto canonical header key: `x-call-id` -> `X-Call-Id`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def canonical_header_name(name: str) -> str:
    """Go's canonical form with dashes as underscores: `x-call-id` -> `X_Call_Id`."""
    return canonical_mime_name(name).replace("-", "_")


class EnvironmentBuilder:
    """Builds per-request environments on a copy of the watchdog's, taken once.

    `server_port` is the port requests arrive on (RFC 3875's SERVER_PORT); `http_variables`
    is `cgi_headers` (the Go-style `Http_*` names).
    """

    def __init__(
        self,
        base: dict[str, str] | None = None,
        *,
        server_port: int = 8080,
        http_variables: bool = True,
    ) -> None:
        self._base = dict(os.environ) if base is None else base
        self._server_port = str(server_port)
        self._http_variables = http_variables
        self._go_names: dict[str, str] = {}
        self._cgi_names: dict[str, str] = {}
        self._host_name = socket.gethostname()
        # Tracing on: TRACEPARENT/TRACESTATE, OpenTelemetry's carrier for a process.
        self._trace_context = tracing_configured(self._base)

    @classmethod
    def from_config(cls, config: Config, base: dict[str, str] | None = None) -> EnvironmentBuilder:
        """The builder a forking mode needs for these settings (port, cgi_headers)."""
        return cls(base, server_port=config.port, http_variables=config.cgi_headers)

    def _go_name(self, header: str) -> str:
        name = self._go_names.get(header)
        if name is None:
            name = "Http_" + canonical_header_name(header)
            if len(self._go_names) < _NAME_CACHE_LIMIT:
                self._go_names[header] = name
        return name

    def _cgi_name(self, header: str) -> str:
        name = self._cgi_names.get(header)
        if name is None:
            name = "HTTP_" + header.upper().replace("-", "_")
            if len(self._cgi_names) < _NAME_CACHE_LIMIT:
                self._cgi_names[header] = name
        return name

    def build(self, request: Request, content_length: int | None = None) -> dict[str, str]:
        """The environment for one request's process.

        `content_length` is what the process will read on stdin when the mode knows it (a
        buffered body); otherwise CONTENT_LENGTH is the request's Content-Length header.
        """
        env = self._base.copy()
        if self._http_variables:
            self._add_go_variables(env, request)
        self._add_cgi_variables(env, request, content_length)
        if self._trace_context:
            _add_trace_context(env, request.headers)
        return env

    def _add_go_variables(self, env: dict[str, str], request: Request) -> None:
        seen: set[str] = set()
        for header, value in request.headers:
            name = self._go_name(header)
            if name not in seen and name != "Http_Proxy":
                seen.add(name)
                env[name] = value
        env["Http_Method"] = request.method
        env["Http_Path"] = request.path
        if request.query:
            env["Http_Query"] = request.query

    def _add_cgi_variables(
        self, env: dict[str, str], request: Request, content_length: int | None
    ) -> None:
        content_type: str | None = None
        declared_length: str | None = None
        host: str | None = None
        joined: dict[str, str] = {}
        for header, value in request.headers:
            lowered = header.lower()
            if lowered in _NOT_AS_HTTP:
                if lowered == "content-type" and content_type is None:
                    content_type = value
                elif lowered == "content-length" and declared_length is None:
                    declared_length = value
                continue
            if lowered == "host" and host is None:
                host = value
            name = self._cgi_name(header)
            previous = joined.get(name)
            if previous is None:
                joined[name] = value
            else:
                # Cookies are a "; "-separated list (RFC 6265 5.4); every other field ", ".
                separator = "; " if name == "HTTP_COOKIE" else ", "
                joined[name] = previous + separator + value
        env.update(joined)
        env["GATEWAY_INTERFACE"] = "CGI/1.1"
        env["SERVER_PROTOCOL"] = f"HTTP/{request.http_version}"
        env["SERVER_SOFTWARE"] = SERVER_SOFTWARE
        env["SERVER_NAME"] = _host_name(host) or self._host_name
        env["SERVER_PORT"] = self._server_port
        env["REQUEST_METHOD"] = request.method
        env["SCRIPT_NAME"] = ""
        env["PATH_INFO"] = request.path
        env["QUERY_STRING"] = request.query
        remote_host, remote_port = request.remote_addr
        if remote_host.startswith("::ffff:") and "." in remote_host:
            remote_host = remote_host[7:]  # an IPv4 client of a dual-stack socket
        env["REMOTE_ADDR"] = remote_host
        env["REMOTE_PORT"] = str(remote_port)
        if content_type is not None:
            env["CONTENT_TYPE"] = content_type
        if content_length is not None:
            env["CONTENT_LENGTH"] = str(content_length)
        elif declared_length is not None:
            env["CONTENT_LENGTH"] = declared_length


def _add_trace_context(env: dict[str, str], headers: list[tuple[str, str]]) -> None:
    """TRACEPARENT and TRACESTATE from the request's trace context, which the router has
    made name the watchdog's span; none of the watchdog's own (or a stale one) otherwise."""
    env.pop("TRACEPARENT", None)
    env.pop("TRACESTATE", None)
    for name, value in headers:
        lowered = name.lower()
        if lowered == "traceparent":
            env["TRACEPARENT"] = value
        elif lowered == "tracestate":
            env["TRACESTATE"] = value


def _host_name(host: str | None) -> str:
    """The name part of a Host header: `example.com:8080` -> `example.com`, `[::1]:80` -> `::1`."""
    if not host:
        return ""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
