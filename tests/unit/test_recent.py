"""Recent: the bounded memory of the fast lanes."""

from fwatchdog.recent import Recent


def test_recent_keeps_the_newest_entries_with_short_keys() -> None:
    recent: Recent[int] = Recent(limit=2, max_key=3)
    recent.remember(b"a", 1)
    recent.remember(b"b", 2)
    recent.remember(b"toolong", 9)
    recent.remember(b"a", 11)  # known already: kept, nothing dropped
    assert recent == {b"a": 11, b"b": 2}
    recent.remember(b"c", 3)  # past the limit: the oldest goes
    assert recent == {b"b": 2, b"c": 3}
