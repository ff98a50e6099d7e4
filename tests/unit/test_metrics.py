"""The request duration histogram has the Go of-watchdog's buckets and `le` labels."""

import re

from fwatchdog.telemetry.metrics import Metrics

# prometheus.DefBuckets of the Go client, as its text exposition writes them.
GO_LE_LABELS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]


def test_duration_histogram_has_go_default_buckets_and_labels() -> None:
    metrics = Metrics()
    metrics.observe("GET", 200, 0.7)  # between 0.5 and 1: Python's default had a 0.75 bucket
    text = metrics.render()[0].decode()
    labels = re.findall(r'http_request_duration_seconds_bucket\{code="200",le="([^"]+)"', text)
    assert labels == [*GO_LE_LABELS, "+Inf"]
    counts = dict(
        re.findall(r'http_request_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)', text)
    )
    assert counts["0.5"] == "0.0"
    assert counts["1"] == "1.0"
    assert counts["+Inf"] == "1.0"
