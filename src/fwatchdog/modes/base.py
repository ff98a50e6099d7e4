"""The interface every mode implements: start, handle a request, stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fwatchdog.http.request import Request
from fwatchdog.http.response import Response

# `answer_now(request, response) -> bool`, optional: True when the mode has answered the
# request without awaiting anything (a cached file) or has started an answer that callbacks
# will finish (`Response.when_done` tells when; the mode then bounds it by its timeouts
# itself, and stops when `Response.abandon` calls its `on_abandon` hook); False, leaving the
# response untouched, to have `handle` answer it in a task.
AnswerNow = Callable[[Request, Response], bool]


class Mode(Protocol):
    """One way of turning a request into a function's answer."""

    async def start(self) -> None:
        """Get ready to serve (start a long-lived child, check a directory, ...)."""

    async def handle(self, request: Request, response: Response) -> None:
        """Answer one request; must leave nothing running when it returns or is cancelled."""

    async def stop(self) -> None:
        """Release what `start` acquired."""


def answer_now_of(mode: Mode) -> AnswerNow | None:
    """The mode's optional path without a task (see AnswerNow)."""
    answer: AnswerNow | None = getattr(mode, "answer_now", None)
    return answer
