"""Fuzz the CGI header block parser: any output, cut anywhere, gives a head or a CgiHeaderError,
and the same answer however it is cut."""

import sys

import atheris

with atheris.instrument_imports():
    from fwatchdog.modes.forking.cgi_response import CgiHeaderError, CgiHeaderParser


def parse(pieces: list[bytes]) -> tuple[int, list[tuple[str, str]], bytes] | str:
    parser = CgiHeaderParser()
    try:
        for index, piece in enumerate(pieces):
            head = parser.feed(piece)
            if head is not None:
                rest = b"".join(pieces[index + 1 :])
                return head.status, head.headers, head.body + rest
        head = parser.end()
    except CgiHeaderError:
        return "error"
    return head.status, head.headers, head.body


def test_one_input(data: bytes) -> None:
    if not data:
        return
    cut = data[0] % (len(data)) if len(data) > 1 else 0
    output = data[1:]
    whole = parse([output])
    split = parse([output[:cut], output[cut:]])
    assert whole == split, (whole, split)
    if whole != "error":
        status, headers, _ = whole
        assert 200 <= status <= 599
        for name, value in headers:
            assert "\r" not in value and "\n" not in value and ":" not in name
            assert name.lower() not in ("status", "content-length", "connection", "date")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
