"""Recent: the bounded memory of the fast lanes."""

from fwatchdog.http.recent import Recent


def test_recent_keeps_the_newest_entries_with_short_keys() -> None:
    recent: Recent[int] = Recent(limit=2, max_key=3)
    recent.remember(b"a", 1)
    recent.remember(b"b", 2)
    recent.remember(b"toolong", 9)
    recent.remember(b"a", 11)  # known already: kept, nothing dropped
    assert recent == {b"a": 11, b"b": 2}
    recent.remember(b"c", 3)  # past the limit: the oldest goes
    assert recent == {b"b": 2, b"c": 3}


def test_a_long_run_of_new_keys_keeps_exactly_the_newest() -> None:
    recent: Recent[int] = Recent(limit=3, max_key=8)
    for number in range(10_000):
        recent.remember(b"%d" % number, number)
        recent.remember(b"%d" % number, number)  # again: no second place in the order
    assert recent == {b"9997": 9997, b"9998": 9998, b"9999": 9999}
