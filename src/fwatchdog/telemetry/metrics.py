"""Prometheus metrics with the Go of-watchdog's names and labels, served on `metrics_port`.

Requests are counted in plain Python numbers on the hot path; prometheus-client is imported
and turns them into its exposition format only when /metrics is scraped. That keeps its
import (tens of milliseconds) out of start-up and its locks out of every request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from fwatchdog.http.request import Request
from fwatchdog.http.response import Response

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

# The Go client's prometheus.DefBuckets, which the Go of-watchdog's histogram uses, so that
# dashboards and recording rules made for it find the same buckets (prometheus-client's Python
# default adds .075, .75 and 7.5).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Each bucket's `le` label as the Go client writes it (strconv 'g', -1: "1", not "1.0").
_BUCKET_LABELS = (*(format(bound, "g") for bound in BUCKETS), "+Inf")


class _Series:
    """One (code, method) pair: its count, sum and per-bucket counts."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class Metrics:
    """The three series Go exposes: requests_total, request_duration_seconds, in_flight."""

    passes_raw_requests = False  # as a Handler: a scrape has nothing to pass on

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}
        # The same series by the request's own method and status: no formatting per request.
        self._by_request: dict[tuple[str, int], _Series] = {}
        self._in_flight: Callable[[], int] = lambda: 0
        self._registry: CollectorRegistry | None = None
        # Other processes serving the same port (http_workers): their snapshots, per scrape.
        self._peers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
        self._peer_snapshots: list[dict[str, Any]] = []

    def count_in_flight(self, source: Callable[[], int]) -> None:
        """Where the in-flight gauge reads its value when scraped (the router's count)."""
        self._in_flight = source

    def add_peers(self, snapshots: Callable[[], Awaitable[list[dict[str, Any]]]]) -> None:
        """Where a scrape gets the counters of the other processes serving the port."""
        self._peers = snapshots

    def snapshot(self) -> dict[str, Any]:
        """This process's counters as plain data, for the primary's scrape (`add_peers`)."""
        return {"in_flight": self._in_flight(), "series": self._rows()}

    def _rows(self) -> list[list[Any]]:
        """Each series as [code, method, count, sum, buckets]: a snapshot's, and a scrape's
        own beside its peers'."""
        return [
            [code, method, series.count, series.sum, series.buckets]
            for (code, method), series in self._series.items()
        ]

    def _all_series(self) -> tuple[dict[tuple[str, str], _Series], int]:
        """This process's series and in-flight count, plus its peers' from this scrape."""
        if not self._peer_snapshots:
            return self._series, self._in_flight()
        merged: dict[tuple[str, str], _Series] = {}
        in_flight = self._in_flight()
        for rows in [self._rows(), *(peer["series"] for peer in self._peer_snapshots)]:
            for code, method, count, total, buckets in rows:
                series = merged.get((code, method))
                if series is None:
                    series = merged[(code, method)] = _Series()
                series.count += count
                series.sum += total
                series.buckets = [a + b for a, b in zip(series.buckets, buckets, strict=True)]
        for peer in self._peer_snapshots:
            in_flight += peer["in_flight"]
        return merged, in_flight

    def observe(self, method: str, status: int, seconds: float) -> None:
        series = self._by_request.get((method, status))
        if series is None:
            series = self._series_of(method, status)
        series.count += 1
        series.sum += seconds
        series.buckets[bisect_left(BUCKETS, seconds)] += 1

    def _series_of(self, method: str, status: int) -> _Series:
        key = (str(status), method.lower())
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        if len(self._by_request) < 1024:  # methods are the client's to invent
            self._by_request[(method, status)] = series
        return series

    def collect(self) -> Iterator[Any]:
        """Metric families for prometheus-client (the Collector protocol)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        total = CounterMetricFamily(
            "http_requests", "total HTTP requests processed", labels=["code", "method"]
        )
        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Seconds spent serving HTTP requests.",
            labels=["code", "method"],
        )
        all_series, in_flight = self._all_series()
        for (code, method), series in sorted(all_series.items()):
            total.add_metric([code, method], series.count)
            cumulative = 0
            buckets = []
            for label, count in zip(_BUCKET_LABELS, series.buckets, strict=True):
                cumulative += count
                buckets.append((label, cumulative))
            duration.add_metric([code, method], buckets, series.sum)
        yield total
        yield duration
        yield GaugeMetricFamily(
            "http_requests_in_flight", "total HTTP requests in-flight", value=in_flight
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type."""
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        from prometheus_client.registry import CollectorRegistry

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(self)
        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    async def scrape(self) -> tuple[bytes, str]:
        """`render`, with the counters of the other processes serving the port added."""
        self._peer_snapshots = await self._peers() if self._peers is not None else []
        try:
            return self.render()
        finally:
            self._peer_snapshots = []

    def serve(self, request: Request, response: Response) -> Coroutine[Any, Any, None]:
        """The metrics listener's handler (HttpConnection's): its one route, in a task."""
        return self.handle(request, response)

    async def handle(self, request: Request, response: Response) -> None:
        """The metrics listener's only route."""
        if request.path != "/metrics":
            response.send_text(404, "Not Found: metrics are at /metrics")
        elif request.method not in ("GET", "HEAD"):
            response.send(405, b"Method Not Allowed\n", [("Allow", "GET, HEAD")])
        else:
            body, content_type = await self.scrape()
            response.send(200, body, [("Content-Type", content_type)])
