"""python3-http's `handle(event, context)` served by fwatchdog in afterburn mode.

The same handler as the python3-http template (flask and waitress under the Go watchdog):
`event` has body (bytes), headers, method, query and path; the handler returns a dict with
statusCode, body and headers, or None. Here one Python process reads each request from stdin
(fwatchdog.function), so the image needs no web framework.
"""

import json
import os
from typing import Any

from function import handler

from fwatchdog.function import Request, Response, serve


class Query(dict[str, list[str]]):
    """The query string as Flask's request.args reads it: get() and [] give the first value."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name)[0]

    def get(self, name: str, default: Any = None) -> Any:
        values = super().get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(super().get(name, []))


class Event:
    """What python3-http's handler gets as `event`."""

    def __init__(self, request: Request) -> None:
        self.body = request.body
        self.headers = request.headers
        self.method = request.method
        self.query = Query(request.query)
        self.path = request.path


class Context:
    """What python3-http's handler gets as `context`."""

    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")


def as_response(result: Any) -> Any:
    """The handler's dict as python3-http answers it: a dict body as JSON, others as text."""
    if result is None:
        return Response(b"", 200, {"Content-Type": "text/html; charset=utf-8"})
    if not isinstance(result, dict):
        return result
    headers = dict(result.get("headers") or {})  # a dict, or a list of (name, value)
    body = result.get("body", "")
    if isinstance(body, dict):
        # Flask's jsonify: compact, keys sorted, a newline at the end.
        body = json.dumps(body, separators=(",", ":"), sort_keys=True) + "\n"
        headers.setdefault("Content-Type", "application/json")
    else:
        body = str(body)
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "text/html; charset=utf-8"  # Flask's default for text
    return Response(body, int(result.get("statusCode", 200)), headers)


def handle(request: Request) -> Any:
    return as_response(handler.handle(Event(request), Context()))


if __name__ == "__main__":
    serve(handle)
