"""Log lines look like the Go watchdog's (or JSON); LineSplitter keeps memory bounded."""

import asyncio
import io
import json
import re

import pytest

from fwatchdog.telemetry.logs import (
    FLUSH_GAP,
    FLUSH_LINES,
    TRUNCATED_MARKER,
    LineSplitter,
    Log,
    RequestLine,
    human_size,
)

STAMP = r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "


def text_log() -> tuple[Log, io.StringIO]:
    stream = io.StringIO()
    return Log(stream=stream), stream


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (12, "12B"),
        (999, "999B"),
        (1000, "1kB"),
        (1024, "1.024kB"),
        (123456, "123.5kB"),
        (1500000, "1.5MB"),
        (2 * 1024**3, "2.147GB"),
        (10**12, "1TB"),
    ],
)
def test_human_size_is_dockers_decimal_units(size: int, text: str) -> None:
    assert human_size(size) == text


def test_info_is_go_log_format() -> None:
    log, stream = text_log()
    log.info("Listening on port: 8080")
    assert re.fullmatch(STAMP + r"Listening on port: 8080\n", stream.getvalue())


def test_text_fields_follow_the_message() -> None:
    log, stream = text_log()
    log.error("function exited", status=1, pid=42)
    assert re.fullmatch(STAMP + r"function exited status=1 pid=42\n", stream.getvalue())


def test_request_line_matches_go_watchdog() -> None:
    log, stream = text_log()
    log.request(RequestLine("POST", "/path?x=1"), 200, 1024, 0.01234)
    expected = STAMP + re.escape("POST /path?x=1 - 200 - ContentLength: 1.024kB (0.0123s)") + "\n"
    assert re.fullmatch(expected, stream.getvalue())


def test_request_line_with_call_id() -> None:
    log, stream = text_log()
    log.request(RequestLine("GET", "/", "none"), 500, 0, 1.5)
    assert stream.getvalue().endswith(" - 500 - ContentLength: 0B (1.5000s) [none]\n")


def test_function_line_with_and_without_prefix() -> None:
    log, stream = text_log()
    log.function_line("stderr", "boom", prefix=True)
    log.function_line("stderr", "bare", prefix=False)
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(STAMP + "stderr: boom", first)
    assert second == "bare"


def test_json_info_has_time_level_msg_and_fields() -> None:
    stream = io.StringIO()
    Log(json_format=True, stream=stream).error("bad thing", port=8080, msg="not overwritten")
    (record,) = json_lines(stream)
    assert record["level"] == "error"
    assert record["msg"] == "bad thing"
    assert record["port"] == 8080
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(record["time"]))


def test_json_request() -> None:
    stream = io.StringIO()
    log = Log(json_format=True, stream=stream)
    log.request(RequestLine("POST", "/a?b=1", "abc"), 201, 5, 0.25)
    log.request(RequestLine("GET", "/"), 200, 0, 0.1)
    first, second = json_lines(stream)
    assert first["level"] == "info"
    assert {k: first[k] for k in ("method", "path", "status", "bytes", "seconds", "call_id")} == {
        "method": "POST",
        "path": "/a?b=1",
        "status": 201,
        "bytes": 5,
        "seconds": 0.25,
        "call_id": "abc",
    }
    assert "call_id" not in second


def test_json_function_line_ignores_prefix() -> None:
    stream = io.StringIO()
    Log(json_format=True, stream=stream).function_line("stdout", "héllo", prefix=False)
    (record,) = json_lines(stream)
    assert (record["msg"], record["stream"], record["level"]) == ("héllo", "stdout", "info")


def test_a_closed_stream_does_not_break_the_caller() -> None:
    stream = io.StringIO()
    log = Log(stream=stream)
    stream.close()
    log.info("nobody hears this")


def test_log_defaults_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    Log().info("to stderr")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("to stderr\n")


# --- LineSplitter -----------------------------------------------------------------------------


def split(chunks: list[bytes], max_line: int = 100, close: bool = True) -> list[str]:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line)
    for chunk in chunks:
        splitter.feed(chunk)
    if close:
        splitter.close()
    return lines


def test_splits_lines_across_chunks() -> None:
    assert split([b"he", b"llo\nwor", b"ld\n"]) == ["hello", "world"]


def test_keeps_empty_lines_and_strips_carriage_returns() -> None:
    assert split([b"a\r\n\nb\r\n"]) == ["a", "", "b"]


def test_close_flushes_an_unterminated_last_line() -> None:
    assert split([b"a\nlast"], close=False) == ["a"]
    assert split([b"a\nlast"]) == ["a", "last"]
    assert split([b"a\n"]) == ["a"]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert split([b"caf\xc3\xa9 \xff\n"]) == ["café \ufffd"]


def test_utf8_split_across_chunks_is_kept_whole() -> None:
    assert split([b"caf\xc3", b"\xa9\n"]) == ["café"]


def test_long_line_is_cut_and_the_next_lines_still_flow() -> None:
    lines = split([b"0123456789ABC\nshort\n"], max_line=10)
    assert lines == ["0123456789" + TRUNCATED_MARKER, "short"]


def test_long_line_spread_over_chunks_is_cut_once() -> None:
    chunks = [b"01234", b"56789", b"ABCDE", b"FGH\nnext", b"\n"]
    assert split(chunks, max_line=8) == ["01234567" + TRUNCATED_MARKER, "next"]


def test_line_of_exactly_max_line_is_not_cut_even_with_crlf() -> None:
    assert split([b"12345\r\n12345\n123456\n"], max_line=5) == [
        "12345",
        "12345",
        "12345" + TRUNCATED_MARKER,
    ]


def test_unterminated_long_line_is_reported_once() -> None:
    assert split([b"x" * 50], max_line=10) == ["x" * 10 + TRUNCATED_MARKER]


def test_unlimited_keeps_long_lines_whole() -> None:
    assert split([b"y" * 200_000, b"\n"], max_line=-1) == ["y" * 200_000]


def test_memory_stays_bounded_by_max_line_for_a_huge_line() -> None:
    lines: list[str] = []
    splitter = LineSplitter(lines.append, 1024)
    chunk = b"z" * 65536
    for _ in range(2000):  # 128 MiB without a newline
        splitter.feed(chunk)
        assert len(splitter._buffer) <= 1025
    splitter.feed(b"\nafter\n")
    assert lines == ["z" * 1024 + TRUNCATED_MARKER, "after"]


def test_lines_are_written_together_after_the_flush_gap() -> None:
    stream = io.StringIO()
    log = Log(stream=stream)

    async def log_two_lines() -> tuple[str, str]:
        log.attach(asyncio.get_running_loop())
        log.info("one")
        log.request(RequestLine("GET", "/"), 200, 0, 0.001)
        await asyncio.sleep(0)
        before = stream.getvalue()
        await asyncio.sleep(FLUSH_GAP * 4)
        return before, stream.getvalue()

    before, after = asyncio.run(log_two_lines())
    assert before == ""
    first, second = after.splitlines()
    assert first.endswith("one")
    assert second.endswith("GET / - 200 - ContentLength: 0B (0.0010s)")


def test_many_waiting_lines_are_written_at_once_and_detaching_writes_the_rest() -> None:
    stream = io.StringIO()
    log = Log(stream=stream)

    async def log_many() -> tuple[int, int]:
        log.attach(asyncio.get_running_loop())
        for number in range(FLUSH_LINES + 1):
            log.info(f"line {number}")
        written = len(stream.getvalue().splitlines())
        log.attach(None)
        return written, len(stream.getvalue().splitlines())

    assert asyncio.run(log_many()) == (FLUSH_LINES, FLUSH_LINES + 1)


def test_a_shared_log_writes_whole_lines_in_pieces_a_pipe_takes_at_once() -> None:
    pieces: list[str] = []

    class Writes(io.StringIO):
        def write(self, text: str) -> int:
            pieces.append(text)
            return super().write(text)

    stream = Writes()
    log = Log(stream=stream)
    log.shared = True
    lines = [f"line {n} " + "x" * (n % 90) for n in range(300)] + ["y" * 5000, "z"]
    for line in lines:
        log.function_line("stdout", line, prefix=False)
    log.flush()
    assert stream.getvalue().splitlines() == lines
    assert len(pieces) > 1
    for piece in pieces:
        assert piece.endswith("\n")
        assert len(piece.encode()) <= 4096 or piece.count("\n") == 1
