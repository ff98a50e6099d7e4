"""What the two fork-per-request modes share: the program, its environment, the spawner."""

from __future__ import annotations

from fwatchdog.modes.forking.cgi_env import EnvironmentBuilder
from fwatchdog.process.spawn import Program, Spawner
from fwatchdog.runtime.deadlines import Deadlines
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.logs import Log


class ForkingMode:
    """Base of streaming and serializing mode: `fprocess` is started anew for each request,
    so there is nothing to start, and stopping only releases the spawner's threads."""

    def __init__(self, config: Config, log: Log) -> None:
        self._config = config
        self._log = log
        self._program = Program(config.function_argv)
        self._environment = EnvironmentBuilder.from_config(config)
        self._spawner = Spawner(config.spawn_threads)
        self._deadlines = Deadlines()  # exec_timeout, for every request's process

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._spawner.close()
