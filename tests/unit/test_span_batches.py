"""The span queue and its export thread (telemetry/span_batches.py), with a real thread and a
recording export function; and OTEL_BSP_* read as the SDK reads them."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from fwatchdog.settings.errors import StartupError
from fwatchdog.telemetry.span_batches import BatchSettings, SpanBatches


class Recorder:
    """The export and complain functions, recording what they were given."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.complaints: list[str] = []
        self._hold = hold

    def export(self, batch: Sequence[int]) -> None:
        if self._hold is not None:
            self._hold.wait(10)
        self.batches.append(list(batch))

    def complain(self, line: str) -> None:
        self.complaints.append(line)


def wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_full_batch_is_exported_at_once() -> None:
    recorder = Recorder()
    batches = SpanBatches(BatchSettings(60.0, 16, 4), recorder.export, recorder.complain)
    for span in range(4):
        batches.add(span)
    assert wait_for(lambda: recorder.batches == [[0, 1, 2, 3]])
    batches.shutdown(5)


def test_fewer_spans_wait_for_the_schedule_delay() -> None:
    recorder = Recorder()
    batches = SpanBatches(BatchSettings(0.2, 16, 4), recorder.export, recorder.complain)
    started = time.monotonic()
    for span in range(3):
        batches.add(span)
    assert wait_for(lambda: recorder.batches == [[0, 1, 2]])
    assert time.monotonic() - started >= 0.15
    batches.shutdown(5)


def test_shutdown_exports_everything_queued_in_order_in_batches() -> None:
    recorder = Recorder()
    batches = SpanBatches(BatchSettings(60.0, 100, 4), recorder.export, recorder.complain)
    hold = threading.Event()
    recorder._hold = hold  # the first full batch waits, so the rest stay queued
    for span in range(10):
        batches.add(span)
    hold.set()
    batches.shutdown(5)
    assert [span for batch in recorder.batches for span in batch] == list(range(10))
    assert all(len(batch) <= 4 for batch in recorder.batches)
    assert recorder.complaints == []


def test_spans_past_the_queue_size_are_dropped_and_said() -> None:
    hold = threading.Event()
    recorder = Recorder(hold)
    batches = SpanBatches(BatchSettings(0.05, 8, 4), recorder.export, recorder.complain)
    for span in range(4):
        batches.add(span)  # the export thread takes these and waits in export
    assert wait_for(lambda: len(batches._queue) == 0)
    for span in range(4, 20):
        batches.add(span)  # 8 fit, 8 are dropped
    hold.set()
    assert wait_for(lambda: recorder.complaints != [])
    assert recorder.complaints == [
        "8 spans dropped: the queue (OTEL_BSP_MAX_QUEUE_SIZE=8) was full"
    ]
    batches.shutdown(5)
    assert [span for batch in recorder.batches for span in batch] == list(range(12))


def test_otel_bsp_defaults_are_the_sdks() -> None:
    assert BatchSettings.from_environment({}) == BatchSettings(5.0, 2048, 512)
    settings = BatchSettings.from_environment(
        {
            "OTEL_BSP_SCHEDULE_DELAY": "250",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
            "OTEL_BSP_EXPORT_TIMEOUT": "0",
        }
    )
    assert settings == BatchSettings(0.25, 64, 16)


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY=0: a whole number, at least 1"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "lots"}, "OTEL_BSP_MAX_QUEUE_SIZE=lots: a whole number"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "-1"}, "OTEL_BSP_EXPORT_TIMEOUT=-1: a whole number"),
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "10"},
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512: a batch cannot be larger than "
            "OTEL_BSP_MAX_QUEUE_SIZE=10",
        ),
    ],
)
def test_otel_bsp_values_that_do_not_fit_stop_the_start(
    environ: dict[str, str], error: str
) -> None:
    with pytest.raises(StartupError) as raised:
        BatchSettings.from_environment(environ)
    assert str(raised.value).startswith(error)
