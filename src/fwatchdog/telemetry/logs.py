"""The watchdog's log: its own messages, one line per request, and the function's output.

Text lines look like the Go of-watchdog's (`2026/11/27 22:11:18 <msg>`) so existing log searches
keep working; `log_format=json` gives one JSON object per line for log collectors instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from fwatchdog.telemetry.fixed_point import FixedPoint

if TYPE_CHECKING:
    import asyncio  # the command loads it without OpenSSL, after the settings (event_loop.py)

TRUNCATED_MARKER = " [truncated; raise log_buffer_size to see more]"

# Lines wait up to FLUSH_GAP seconds to be written together (the first one starts the clock),
# or until FLUSH_LINES are waiting: a write system call per line costs more than the request.
FLUSH_GAP = 0.005
FLUSH_LINES = 256
# A write of at most PIPE_BUF bytes (4096 on Linux) to a pipe is never interleaved with
# another process's; pieces of at most this many characters stay under it while most
# characters take one or two bytes.
PIPE_BUF = 2048

# A request line's duration: seconds with 4 decimals.
_SECONDS = FixedPoint(4, str)

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


_human_sizes: dict[int, str] = {}


def human_size(size: int) -> str:
    """Docker's units.HumanSize, which the Go watchdog's request line uses: 1024 -> "1.024kB".

    The same few sizes come back request after request; formatting a float is slow.
    """
    known = _human_sizes.get(size)
    if known is not None:
        return known
    text = _format_size(size)
    if len(_human_sizes) < 4096:
        _human_sizes[size] = text
    return text


def _format_size(size: int) -> str:
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(_DECIMAL_UNITS) - 1:
        value /= 1000
        unit += 1
    return f"{value:.4g}{_DECIMAL_UNITS[unit]}"


class RequestLine:
    """A request's half of its log line, and what its metrics need, worked out once per
    request by the router."""

    __slots__ = ("call_id", "logged", "method", "tail", "target", "text")

    def __init__(
        self,
        method: str,
        target: str,
        call_id: str | None = None,
        logged: bool = True,
        note: str = "",
    ) -> None:
        self.method = method
        self.target = target
        self.call_id = call_id  # only with log_callid
        self.logged = logged  # False for Kubernetes' probes, counted but not logged
        # `note`: why the watchdog answered itself (ACCESS DENIED ...), after the target.
        self.text = f"{method} {target} - {note}" if note else f"{method} {target}"
        self.tail = "s)\n" if call_id is None else f"s) [{call_id}]\n"


class Log:
    """Writes every line the watchdog prints, as text (Go's format) or JSON, to one stream.

    `stream` defaults to stderr, looked up when the Log is made so tests can swap it.
    """

    def __init__(self, json_format: bool = False, stream: TextIO | None = None) -> None:
        self.json_format = json_format
        self._stream = stream if stream is not None else sys.stderr
        # Formatting the time is a good part of a request line's cost; it changes once a second.
        self._stamp_second = -1
        self._stamp = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[str] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._answers: dict[tuple[int, int], str] = {}
        # Other processes write to the same stream (http_workers): write whole lines in
        # pieces a pipe takes atomically, so that no line is cut by another's.
        self.shared = False

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Write lines in one go, FLUSH_GAP after the first, with a timer of `loop` (None:
        at once, from now on, and what waits is written now).

        A request line per request would otherwise be a write system call per request.
        """
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self.flush()
        self._loop = loop

    def flush(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        pieces = _atomic_pieces(text) if self.shared and len(text) > PIPE_BUF else (text,)
        # If the log's reader went away (closed pipe or stream) there is nowhere left to say
        # so, and serving requests matters more than logging them.
        with contextlib.suppress(OSError, ValueError):
            for piece in pieces:
                self._stream.write(piece)
                self._stream.flush()

    # `msg` is positional-only so that a field may be called anything, even "msg".
    def info(self, msg: str, /, **fields: object) -> None:
        self._write("info", msg, fields)

    def error(self, msg: str, /, **fields: object) -> None:
        self._write("error", msg, fields)

    def request(
        self,
        line: RequestLine,
        status: int,
        size: int,
        seconds: float,
        trace: tuple[str, str] | None = None,
    ) -> None:
        """The one line per request: `line` is the request's half; `trace`: the trace and
        span ids of its span (tracing on), which a JSON line carries."""
        if self.json_format:
            fields: dict[str, object] = {
                "method": line.method,
                "path": line.target,
                "status": status,
                "bytes": size,
                "seconds": round(seconds, 6),
            }
            if line.call_id is not None:
                fields["call_id"] = line.call_id
            if trace is not None:
                fields["trace_id"], fields["span_id"] = trace
            self._write_json("info", f"{line.text} {status}", fields)
            return
        answer = self._answers.get((status, size))
        if answer is None:
            answer = self._answer_part(status, size)
        units = int(seconds * _SECONDS.scale + 0.5)
        duration = _SECONDS.get(units) or _SECONDS.write(units)
        if int(time.time()) != self._stamp_second:
            self._time_stamp()
        pending = self._pending
        pending.append(f"{self._stamp}{line.text}{answer}{duration}{line.tail}")
        if len(pending) == 1 or len(pending) >= FLUSH_LINES:
            self._flush_soon()

    def _answer_part(self, status: int, size: int) -> str:
        """` - 200 - ContentLength: 1.024kB (`: the answer's half of a request line, which
        is the same for most answers of a function."""
        text = f" - {status} - ContentLength: {human_size(size)} ("
        if len(self._answers) < 4096:
            self._answers[(status, size)] = text
        return text

    def function_line(self, stream_name: str, line: str, prefix: bool) -> None:
        """A line the function printed on `stream_name` ("stderr" or "stdout")."""
        if self.json_format:
            self._write_json("info", line, {"stream": stream_name})
        elif prefix:
            self._write_text(f"{stream_name}: {line}")
        else:
            self._put(line + "\n")

    def _write(self, level: str, msg: str, fields: dict[str, object]) -> None:
        if self.json_format:
            self._write_json(level, msg, fields)
        elif fields:
            details = " ".join(f"{key}={value}" for key, value in fields.items())
            self._write_text(f"{msg} {details}")
        else:
            self._write_text(msg)

    def _write_text(self, msg: str) -> None:
        self._put(self._time_stamp() + msg + "\n")

    def _time_stamp(self) -> str:
        """`2026/11/27 22:11:18 `, formatted once a second."""
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second = now
            self._stamp = time.strftime("%Y/%m/%d %H:%M:%S ", time.localtime(now))
        return self._stamp

    def _write_json(self, level: str, msg: str, fields: dict[str, object]) -> None:
        now = time.time()
        seconds = int(now)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        stamp += f".{int((now - seconds) * 1000):03d}Z"
        record: dict[str, object] = {"time": stamp, "level": level, "msg": msg}
        # Extra fields never overwrite the three every line has.
        record.update((key, value) for key, value in fields.items() if key not in record)
        import json  # here: text logs, the default, never pay for it

        self._put(json.dumps(record, ensure_ascii=False, default=str) + "\n")

    def _put(self, text: str) -> None:
        pending = self._pending
        pending.append(text)
        if len(pending) == 1 or len(pending) >= FLUSH_LINES:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """The first line waiting starts the clock; with FLUSH_LINES waiting, write now."""
        if self._loop is None or len(self._pending) >= FLUSH_LINES:
            self.flush()
        elif self._flush_timer is None:
            self._flush_timer = self._loop.call_later(FLUSH_GAP, self._flush_timed)

    def _flush_timed(self) -> None:
        self._flush_timer = None
        self.flush()


def _atomic_pieces(text: str) -> list[str]:
    """`text` cut after newlines into pieces of at most PIPE_BUF characters where its lines
    allow (a longer line is a piece of its own)."""
    pieces = []
    start = 0
    while len(text) - start > PIPE_BUF:
        cut = text.rfind("\n", start, start + PIPE_BUF) + 1
        if cut <= start:  # one line longer than PIPE_BUF
            cut = text.find("\n", start + PIPE_BUF) + 1 or len(text)
        pieces.append(text[start:cut])
        start = cut
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class LineSplitter:
    """Cuts a function's output bytes into lines for the log, in memory bounded by `max_line`.

    A line longer than `max_line` bytes (-1: no limit) is logged cut short with a marker, and the
    rest of it is skipped up to the next newline; the following lines are forwarded as usual (Go's
    scanner stops forwarding for good after one long line).
    """

    def __init__(self, emit: Callable[[str], None], max_line: int) -> None:
        self._emit = emit
        self._max_line = max_line
        # One byte more than max_line, for the "\r" of a "\r\n" line that is exactly max_line long.
        self._limit = max_line + 1 if max_line >= 0 else -1
        self._buffer = bytearray()
        self._skipping = False  # in the tail of a line that was already logged cut short

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if not self._skipping:
                self._append(view[start:end])
            if newline < 0:
                return
            if not self._skipping:
                self._emit_line(self._buffer)
            self._buffer.clear()
            self._skipping = False
            start = newline + 1

    def close(self) -> None:
        """Log a last line that had no newline."""
        if self._buffer and not self._skipping:
            self._emit_line(self._buffer)
        self._buffer.clear()
        self._skipping = False

    def _append(self, piece: memoryview) -> None:
        if self._limit < 0 or len(self._buffer) + len(piece) <= self._limit:
            self._buffer += piece
            return
        self._buffer += piece[: self._limit - len(self._buffer)]
        self._emit_truncated(self._buffer)
        self._buffer.clear()
        self._skipping = True

    def _emit_line(self, line: bytearray) -> None:
        if line.endswith(b"\r"):
            del line[-1]
        if 0 <= self._max_line < len(line):
            self._emit_truncated(line)
        else:
            self._emit(line.decode("utf-8", errors="replace"))

    def _emit_truncated(self, line: bytearray) -> None:
        kept = bytes(line[: self._max_line])
        self._emit(kept.decode("utf-8", errors="replace") + TRUNCATED_MARKER)
