"""One module per mode; `make_mode` picks the one the configuration names."""

from __future__ import annotations

from fwatchdog.modes.base import Mode
from fwatchdog.runtime.primary_link import PrimaryLink
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.logs import Log


def make_mode(config: Config, log: Log, primary: PrimaryLink | None = None) -> Mode:
    """The mode `config` names; `primary` in a worker process (http and static mode)."""
    if config.mode == "streaming":
        from fwatchdog.modes.forking.streaming import StreamingMode

        return StreamingMode(config, log)
    if config.mode == "http":
        from fwatchdog.modes.proxy.mode import HttpMode

        return HttpMode(config, log, primary)
    if config.mode == "static":
        from fwatchdog.modes.static.mode import StaticMode

        return StaticMode(config, log, worker=primary is not None)
    if config.mode == "serializing":
        from fwatchdog.modes.forking.serializing import SerializingMode

        return SerializingMode(config, log)
    if config.mode == "afterburn":
        from fwatchdog.modes.afterburn.mode import AfterburnMode

        return AfterburnMode(config, log)
    raise AssertionError(f"config.py accepted a mode no module serves: {config.mode!r}")
