"""A POST the upstream read and dropped is not sent again (issue 15, item 2): fails today, as
the pooled connection's retry resends any method. Move it to test_upstream_retry.py when it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Watchdog
from test_upstream_retry import seen_by_upstream, start_dropping_upstream, warm_then

Factory = Callable[..., Watchdog]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_request_that_is_not_idempotent_the_upstream_read_and_dropped_is_not_sent_again(
    watchdog_factory: Factory, tmp_path: Path, method: str
) -> None:
    watchdog, seen = start_dropping_upstream(watchdog_factory, tmp_path)
    status, _ = warm_then(watchdog, method, "/charge", [], b"card=4242")
    assert status == 502
    assert len(seen_by_upstream(seen, "/charge")) == 1, f"the {method} was sent more than once"
