"""One module per mode; `make_mode` picks the one the configuration names."""

from __future__ import annotations

from fwatchdog.config import Config
from fwatchdog.logs import Log
from fwatchdog.modes.base import Mode
from fwatchdog.primary_link import PrimaryLink


def make_mode(config: Config, log: Log, primary: PrimaryLink | None = None) -> Mode:
    """The mode `config` names; `primary` in a worker process (http mode only)."""
    if config.mode == "streaming":
        from fwatchdog.modes.streaming import StreamingMode

        return StreamingMode(config, log)
    if config.mode == "http":
        from fwatchdog.modes.http_proxy import HttpMode

        return HttpMode(config, log, primary)
    if config.mode == "static":
        from fwatchdog.modes.static import StaticMode

        return StaticMode(config, log)
    if config.mode == "serializing":
        from fwatchdog.modes.serializing import SerializingMode

        return SerializingMode(config, log)
    if config.mode == "afterburn":
        from fwatchdog.modes.afterburn import AfterburnMode

        return AfterburnMode(config, log)
    raise AssertionError(f"config.py accepted a mode no module serves: {config.mode!r}")
