"""fwatchdog: the OpenFaaS of-watchdog, re-implemented in Python on uvloop and httptools."""

__version__ = "0.1.0"
