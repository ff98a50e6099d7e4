"""fwatchdog.function, the client library, on byte streams: no watchdog needed."""

from __future__ import annotations

import io
import subprocess
import sys

from fwatchdog.function import Response, serve, serve_wsgi


def run(handler, data: bytes) -> bytes:
    out = io.BytesIO()
    serve(handler, io.BytesIO(data), out)
    return out.getvalue()


def test_client_reads_content_length_bodies_and_answers_with_content_length():
    out = run(
        lambda request: request.method + " " + request.path + " " + request.text,
        b"POST /a%20b?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /second HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    text_plain = b"Content-Type: text/plain; charset=utf-8\r\n"
    assert out == (
        b"HTTP/1.1 200 OK\r\n" + text_plain + b"Content-Length: 13\r\n\r\nPOST /a b abc"
        b"HTTP/1.1 200 OK\r\n" + text_plain + b"Content-Length: 12\r\n\r\nGET /second "
    )


def test_client_answers_each_request_with_a_framed_response():
    out = run(
        lambda request: {"n": len(request.body)},
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    first, second = out.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK\r\n") and first.endswith(b'\r\n\r\n{"n": 5}')
    assert b"Content-Type: application/json\r\n" in first
    assert b"Content-Length: 8\r\n" in first
    assert second.endswith(b'{"n": 2}')


def test_client_handler_exception_is_500_and_the_loop_goes_on():
    def handler(request):
        if request.path == "/bad":
            raise RuntimeError("nope")
        return Response(b"", status=204)

    out = run(
        handler,
        b"GET /bad HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        b"GET /ok HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"HTTP/1.1 204 No Content\r\n" in out
    assert b"Content-Length" not in out.split(b"HTTP/1.1 204")[1]


def test_client_print_inside_a_handler_does_not_reach_the_protocol_stream(capsys):
    out = run(
        lambda request: print("chatty handler") or "quiet",
        b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    assert b"chatty" not in out and out.endswith(b"quiet")
    assert "chatty handler" in capsys.readouterr().err


def test_client_wsgi_app_without_length_is_chunked():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"", environ["PATH_INFO"].encode(), environ["wsgi.input"].read()])

    out = io.BytesIO()
    serve_wsgi(app, io.BytesIO(b"PUT /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nzz"), out)
    assert out.getvalue() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n2\r\n/p\r\n2\r\nzz\r\n0\r\n\r\n"
    )


def test_client_library_does_not_import_the_server_side():
    code = (
        "import sys, fwatchdog.function; "
        "bad = [m for m in ('uvloop', 'httptools', 'fwatchdog.runtime.server', 'fwatchdog.http') "
        "if m in sys.modules]; print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
