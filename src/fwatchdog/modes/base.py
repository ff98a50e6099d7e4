"""The interface every mode implements: start, handle a request, stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fwatchdog.http.connection import AnswerNow, HttpConnection
from fwatchdog.http.request import Request
from fwatchdog.http.response import Response
from fwatchdog.telemetry.logs import RequestLine


class Ledger(Protocol):
    """What a mode answering whole requests (`answer_whole`) reports to: requests in flight,
    and the metrics and log line of each, written once, as for every other request."""

    def line_of(self, method: str, target: str, headers: list[tuple[str, str]]) -> RequestLine:
        """What the log line and metrics of the request need; keep it with a remembered
        request, for `answer_known` to report its answers with."""

    def record(self, line: RequestLine, status: int, size: int, seconds: float) -> None:
        """An answer that was complete when `answer_whole` returned."""

    def enter(self) -> None:
        """An answer that callbacks will finish has begun; `leave` when it is complete."""

    def leave(self, line: RequestLine, status: int, size: int, seconds: float) -> None:
        """The answer `enter` announced is complete (status 499: the client went away)."""


AnswerWhole = Callable[
    [HttpConnection, str, str, list[tuple[str, str]], bytes, "int | None", Ledger], bool
]


AnswerKnown = Callable[[HttpConnection, bytes, Ledger], bool]


class Mode(Protocol):
    """One way of turning a request into a function's answer."""

    async def start(self) -> None:
        """Get ready to serve (start a long-lived child, check a directory, ...)."""

    async def handle(self, request: Request, response: Response) -> None:
        """Answer one request; must leave nothing running when it returns or is cancelled."""

    async def stop(self) -> None:
        """Release what `start` acquired."""


def answer_now_of(mode: Mode) -> AnswerNow | None:
    """The mode's optional path without a task: `answer_now(request, response) -> bool`, for a
    request whose body has fully arrived, answers it without awaiting anything (a cached
    file), or starts an answer that callbacks will finish (a proxied request: the mode then
    bounds it by exec_timeout and write_timeout itself, and stops when `Response.abandon`
    calls its `on_abandon` hook); or returns False, leaving the response untouched, for
    `handle` to answer it."""
    answer: AnswerNow | None = getattr(mode, "answer_now", None)
    return answer


def answer_whole_of(mode: Mode) -> AnswerWhole | None:
    """The mode's optional cheapest path: `answer_whole(conn, method, target, headers, raw,
    content_length, ledger) -> bool` (see HttpConnection's AnswerWhole) answers a whole
    request from bytes ready to go, reporting to `ledger`; or returns False, having written
    nothing, for the usual path to answer it."""
    answer: AnswerWhole | None = getattr(mode, "answer_whole", None)
    return answer


def answer_known_of(mode: Mode) -> AnswerKnown | None:
    """The mode's optional path before the parser: `answer_known(conn, data, ledger) -> bool`
    answers a read that is byte for byte a request it answered whole before (static mode:
    the same GET for the same cached file), or returns False, having written nothing."""
    answer: AnswerKnown | None = getattr(mode, "answer_known", None)
    return answer
