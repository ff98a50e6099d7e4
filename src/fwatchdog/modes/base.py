"""The interface every mode implements: start, handle a request, stop."""

from __future__ import annotations

from typing import Protocol

from fwatchdog.http.connection import AnswerNow
from fwatchdog.http.request import Request
from fwatchdog.http.response import Response


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
