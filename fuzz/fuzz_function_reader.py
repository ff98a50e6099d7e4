"""Fuzz the afterburn client library's request reader: any stdin gives requests, then None or
a ProtocolError; never another exception."""

import io
import sys

import atheris

with atheris.instrument_imports():
    from fwatchdog.function import ProtocolError, read_request


def test_one_input(data: bytes) -> None:
    stream = io.BytesIO(data)
    try:
        for _ in range(64):
            if read_request(stream) is None:
                return
    except ProtocolError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
