"""Load asyncio and uvloop without OpenSSL: fwatchdog speaks plain HTTP on both sides
(unless jwt_auth is on: its issuer's documents may be fetched over https on the loop).

uvloop imports `ssl` as it loads and keeps a dozen of its names, and asyncio takes it if it
can. Importing `ssl` maps and initialises OpenSSL's libraries: about 4.4 MiB of resident
memory, a sixth of an idle watchdog, for TLS that nothing here uses. `load_without_openssl`
imports them against a stand-in `ssl` module that has those names and nothing behind them,
then takes the stand-in out of `sys.modules`, so any later `import ssl` (prometheus-client's,
at the first scrape of /metrics) gets the real module. A TLS call on this loop would fail
loudly (its context is never an instance of the stand-in's SSLContext), never silently.
"""

from __future__ import annotations

import sys
import types


class _Unavailable:
    """What the stand-in hands out for a class: nothing is ever an instance of it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("fwatchdog loads the event loop without TLS support")


class _SSLError(OSError):
    """Never raised: no TLS connection exists for it to come from."""


# The integer constants uvloop copies into C variables when it loads.
_CONSTANTS = {
    "SSL_ERROR_WANT_READ": 2,
    "SSL_ERROR_WANT_WRITE": 3,
    "SSL_ERROR_SYSCALL": 5,
    "SSL_ERROR_ZERO_RETURN": 6,
    "SSL_ERROR_EOF": 8,
}
_ERRORS = (
    "SSLError",
    "SSLWantReadError",
    "SSLWantWriteError",
    "SSLSyscallError",
    "SSLZeroReturnError",
    "SSLEOFError",
    "CertificateError",
)


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("ssl", "Stand-in for ssl while the event loop loads (fwatchdog).")
    for name, value in _CONSTANTS.items():
        setattr(module, name, value)
    for name in _ERRORS:
        setattr(module, name, type(name, (_SSLError,), {}))

    def create_default_context(*args: object, **kwargs: object) -> object:
        raise RuntimeError("fwatchdog loads the event loop without TLS support")

    module.create_default_context = create_default_context  # type: ignore[attr-defined]

    def unknown(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (_Unavailable,), {})

    module.__getattr__ = unknown  # type: ignore[method-assign]  # PEP 562
    return module


def load_without_openssl() -> None:
    """Import asyncio and uvloop with the stand-in `ssl`; nothing if either is loaded already
    (in tests, say), since they have then bound the real one."""
    if "asyncio" in sys.modules or "uvloop" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = _stand_in()
    try:
        import asyncio  # noqa: F401

        import uvloop  # noqa: F401
    finally:
        del sys.modules["ssl"]
