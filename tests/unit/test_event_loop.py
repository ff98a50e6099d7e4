"""event_loop.py in a fresh interpreter: the stand-in ssl lets uvloop load and run, and is
gone afterwards, so a later `import ssl` gets the real module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = """
import sys
from fwatchdog.runtime.event_loop import load_without_openssl
load_without_openssl()
assert "_ssl" not in sys.modules and "ssl" not in sys.modules, "OpenSSL was loaded"
import asyncio, uvloop

async def echo_once():
    async def serve(reader, writer):
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping\\n")
    line = await reader.readline()
    writer.close()
    server.close()
    return line

assert uvloop.run(echo_once()) == b"ping\\n"
import ssl
assert "_ssl" in sys.modules and ssl.SSLContext.__module__ == "ssl"
ssl.create_default_context()
print("ok")
"""


def test_uvloop_serves_without_openssl_and_the_real_ssl_module_loads_later() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"


def test_nothing_changes_once_asyncio_is_loaded() -> None:
    """In a process that already has asyncio (and so the real ssl), there is nothing to do."""
    import asyncio  # noqa: F401

    from fwatchdog.runtime.event_loop import load_without_openssl

    before = sys.modules.get("ssl")
    load_without_openssl()
    assert sys.modules.get("ssl") is before
