"""ConnectionState: the one table of a connection's transitions, without sockets."""

from __future__ import annotations

import pytest

from fwatchdog.http import state as st
from fwatchdog.http.state import ConnectionState, StateError


def test_a_request_answered_in_turn_leaves_the_connection_idle() -> None:
    state = ConnectionState()
    assert state.idle
    state.begin_request()
    assert not state.idle and state.reading == st.HEAD
    state.head_complete()
    state.start_answer()
    state.request_complete()
    assert not state.idle  # answering
    state.answer_done()
    assert state.idle


def test_a_pipelined_request_arriving_during_an_answer_is_not_idle() -> None:
    state = ConnectionState()
    state.begin_request()
    state.head_complete()
    state.request_complete()
    state.start_answer()
    state.begin_request()  # the next one's head arrives while the first is answered
    state.answer_done()
    assert not state.idle and state.reading == st.HEAD


def test_an_upgrade_is_switched_once_and_never_parsed_again() -> None:
    state = ConnectionState()
    state.begin_request()
    state.head_complete()
    state.upgrade_requested()
    assert not state.parsing
    state.switch_protocols()
    assert state.reading == st.SWITCHED
    with pytest.raises(StateError):
        state.begin_request()


def test_lingering_drops_the_rest_and_is_never_idle() -> None:
    state = ConnectionState()
    state.begin_request()
    state.head_complete()
    state.start_answer()
    state.answer_done()
    state.linger()
    assert state.reading == st.LINGER and not state.idle and not state.parsing
    with pytest.raises(StateError):
        state.begin_request()


@pytest.mark.parametrize(
    "steps",
    [
        ("head_complete",),  # no head begun
        ("begin_request", "begin_request"),  # two heads at once
        ("request_complete",),
        ("begin_request", "head_complete", "switch_protocols"),  # no upgrade asked for
        ("start_answer", "start_answer"),  # two answers at once
    ],
)
def test_illegal_transitions_raise(steps: tuple[str, ...]) -> None:
    state = ConnectionState()
    with pytest.raises(StateError):
        for step in steps:
            getattr(state, step)()


def test_nothing_changes_once_closed() -> None:
    state = ConnectionState()
    state.begin_request()
    state.close()
    state.head_complete()  # late parser callbacks after the end
    assert state.closed and not state.idle
