"""Prometheus metrics with the Go of-watchdog's names and labels, served on `metrics_port`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from fwatchdog.http.request import Request
from fwatchdog.http.response import Response


class Metrics:
    """The three series Go exposes; a registry of our own so nothing else leaks in."""

    def __init__(self) -> None:
        disable_created_metrics()  # Go has no `_created` series; dashboards do not expect them
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests_total = Counter(
            "http_requests_total",
            "total HTTP requests processed",
            ["code", "method"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Seconds spent serving HTTP requests.",
            ["code", "method"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "total HTTP requests in-flight", registry=self.registry
        )

    def observe(self, method: str, status: int, seconds: float) -> None:
        code = str(status)
        method = method.lower()
        self.requests_total.labels(code, method).inc()
        self.request_duration.labels(code, method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, request: Request, response: Response) -> None:
        """The metrics listener's only route."""
        if request.path != "/metrics":
            response.send_text(404, "Not Found: metrics are at /metrics")
        elif request.method not in ("GET", "HEAD"):
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        else:
            response.send(200, self.render(), [("Content-Type", CONTENT_TYPE_LATEST)])
