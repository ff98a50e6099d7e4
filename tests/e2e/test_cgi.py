"""fwatchdog as a CGI/1.1 gateway, end to end: RFC 3875 meta-variables for forked functions,
CGI response headers (`cgi_response=true`), and the worked examples in `examples/` (a Flask app
under `wsgiref.handlers.CGIHandler`, and a shell-script CGI) driven through a running watchdog.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, Watchdog, environment_of, function, start_watchdog
from raw_http import ResponseReader, read_response

Factory = Callable[..., Watchdog]
Exchange = tuple[int, http.client.HTTPMessage, bytes]

EXAMPLES = ROOT / "examples"
FLASK_APP = EXAMPLES / "flask_cgi" / "app.py"
SHELL_CGI = EXAMPLES / "shell_cgi" / "notes.sh"
SERIALIZING_CGI = {"mode": "serializing", "cgi_response": "true"}


def exchange(
    watchdog: Watchdog,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Exchange:
    """One request whose headers may repeat a name."""
    return watchdog.exchange(method, path, body, headers)


def env_seen_by_function(
    watchdog: Watchdog, request: bytes
) -> tuple[dict[str, str], tuple[str, int]]:
    """Send a raw request to `fprocess=env`; the environment it printed and our address."""
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        client_address = sock.getsockname()
        sock.sendall(request)
        response = ResponseReader(sock).read_response()
    assert response.status == 200, response.raw_head
    return environment_of(response.body), client_address


# --- RFC 3875 meta-variables ----------------------------------------------------------------------

REQUEST_WITH_BODY = (
    b"POST /caf%C3%A9/items?q=a%20b&x=1 HTTP/1.1\r\n"
    b"Host: functions.example:31112\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 9\r\n"
    b"X-Forwarded-For: 10.0.0.1\r\n"
    b"x-forwarded-for: 10.0.0.2\r\n"
    b"Accept: text/plain\r\n"
    b"Connection: close\r\n\r\n"
    b'{"a": 12}'
)


@pytest.mark.parametrize("mode", ["streaming", "serializing"])
def test_forked_functions_get_rfc_3875_meta_variables(watchdog_factory: Factory, mode: str) -> None:
    watchdog = watchdog_factory(fprocess="env", mode=mode)
    env, (client_host, client_port) = env_seen_by_function(watchdog, REQUEST_WITH_BODY)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_SOFTWARE"].startswith("fwatchdog/")
    assert env["SERVER_NAME"] == "functions.example"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/café/items"
    assert env["QUERY_STRING"] == "q=a%20b&x=1"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "9"
    assert env["REMOTE_ADDR"] == client_host
    assert env["REMOTE_PORT"] == str(client_port)
    assert env["HTTP_HOST"] == "functions.example:31112"
    assert env["HTTP_ACCEPT"] == "text/plain"


@pytest.mark.parametrize("mode", ["streaming", "serializing"])
def test_repeated_headers_are_joined_and_content_headers_are_not_http_variables(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = watchdog_factory(fprocess="env", mode=mode)
    env, _ = env_seen_by_function(watchdog, REQUEST_WITH_BODY)
    assert env["HTTP_X_FORWARDED_FOR"] == "10.0.0.1, 10.0.0.2"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env
    # The Go-style names are still there beside them.
    assert env["Http_X_Forwarded_For"] == "10.0.0.1"
    assert env["Http_Method"] == "POST"


@pytest.mark.parametrize("mode", ["streaming", "serializing"])
def test_proxy_header_is_never_passed_to_the_function(watchdog_factory: Factory, mode: str) -> None:
    watchdog = watchdog_factory(fprocess="env", mode=mode)
    env, _ = env_seen_by_function(
        watchdog,
        b"GET / HTTP/1.1\r\nHost: x\r\nProxy: http://attacker.example:8080\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert "attacker.example" not in json.dumps(env)


def test_request_without_body_or_query_has_empty_query_and_no_content_variables(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="env", mode="serializing")
    env, _ = env_seen_by_function(
        watchdog, b"GET /plain HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    assert env["QUERY_STRING"] == ""
    assert env["PATH_INFO"] == "/plain"
    assert "CONTENT_TYPE" not in env
    assert "CONTENT_LENGTH" not in env


def test_server_port_is_the_port_requests_arrive_on(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env", mode="serializing")
    env, _ = env_seen_by_function(
        watchdog, b"GET / HTTP/1.1\r\nHost: elsewhere:1234\r\nConnection: close\r\n\r\n"
    )
    assert env["SERVER_PORT"] == str(watchdog.port)
    assert env["SERVER_NAME"] == "elsewhere"


def test_serializing_chunked_body_gets_content_length_of_what_stdin_carries(
    watchdog_factory: Factory,
) -> None:
    # A CGI program reads CONTENT_LENGTH bytes; a chunked request has no such header, but the
    # serializing mode knows the whole body before the program starts.
    watchdog = watchdog_factory(fprocess="env", mode="serializing")
    env, _ = env_seen_by_function(
        watchdog,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    assert env["CONTENT_LENGTH"] == "11"


def test_http_1_0_request_has_server_protocol_http_1_0(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="env", mode="serializing")
    env, _ = env_seen_by_function(watchdog, b"GET / HTTP/1.0\r\n\r\n")
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


# --- CGI response headers in serializing mode -----------------------------------------------------
# `cat` with cgi_response=true answers with whatever header block the request body carries.


def test_cgi_status_and_headers_set_the_response(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING_CGI)
    status, headers, body = exchange(
        watchdog,
        "POST",
        body=b"Status: 201 Created\r\nContent-Type: application/json\r\n"
        b"Set-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\nX-Custom: yes\r\n\r\n"
        b'{"created": true}',
    )
    assert status == 201
    assert headers["Content-Type"] == "application/json"
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
    assert headers["X-Custom"] == "yes"
    assert headers["Content-Length"] == str(len(b'{"created": true}'))
    assert "X-Duration-Seconds" in headers
    assert body == b'{"created": true}'


def test_cgi_location_without_status_is_302(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING_CGI)
    status, headers, _ = exchange(watchdog, "POST", body=b"Location: /next\n\n")
    assert (status, headers["Location"]) == (302, "/next")


def test_cgi_without_status_is_200_and_content_type_setting_fills_in(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", content_type="text/plain", **SERIALIZING_CGI)
    status, headers, body = exchange(watchdog, "POST", body=b"X-Only: this\n\nthe body")
    assert (status, headers["Content-Type"], body) == (200, "text/plain", b"the body")


def test_cgi_function_content_type_beats_the_setting(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", content_type="text/plain", **SERIALIZING_CGI)
    _, headers, _ = exchange(watchdog, "POST", body=b"Content-Type: image/png\n\n\x89PNG")
    assert headers.get_all("Content-Type") == ["image/png"]


def test_cgi_declared_content_length_is_not_trusted(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING_CGI)
    status, headers, body = exchange(watchdog, "POST", body=b"Content-Length: 999\n\nshort")
    assert (status, headers["Content-Length"], body) == (200, "5", b"short")


def test_cgi_malformed_header_block_is_502_with_one_line_reason(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING_CGI)
    status, _, body = exchange(watchdog, "POST", body=b"just some output\nand more\n")
    assert status == 502
    assert body.count(b"\n") == 0
    assert b"'just some output' is not a CGI header" in body
    watchdog.wait_for_log("is not a CGI header")


def test_cgi_header_block_larger_than_64_kib_is_502(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess="cat", **SERIALIZING_CGI)
    block = b"X-Filler: " + b"a" * 70_000 + b"\n\nbody"
    status, _, body = exchange(watchdog, "POST", body=block)
    assert status == 502
    assert b"larger than 64 KiB" in body


def test_cgi_nonzero_exit_is_still_500_exit_status(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(fprocess=function("ser_cgi_then_fail.sh"), **SERIALIZING_CGI)
    status, _, body = exchange(watchdog, "POST", body=b"")
    assert (status, body) == (500, b"exit status 2")


def test_without_cgi_response_a_header_block_is_body_verbatim(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="cat", mode="serializing")
    output = b"Status: 201 Created\r\nX-Custom: yes\r\n\r\nbody"
    status, headers, body = exchange(watchdog, "POST", body=output)
    assert (status, body) == (200, output)
    assert headers["X-Custom"] is None


# --- the shell-script CGI example -----------------------------------------------------------------


@pytest.fixture(scope="module")
def shell_cgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchdog]:
    watchdog = start_watchdog(
        tmp_path_factory.mktemp("shell-cgi"), fprocess=str(SHELL_CGI), **SERIALIZING_CGI
    )
    yield watchdog
    watchdog.process.kill()
    watchdog.process.wait(10)


def test_shell_cgi_greets_with_rfc_3875_variables(shell_cgi: Watchdog) -> None:
    status, headers, body = exchange(shell_cgi, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.startswith(b"Hello 127.0.0.1, this is fwatchdog/")
    assert body.endswith(b" via CGI/1.1\n")


def test_shell_cgi_reads_the_query_string(shell_cgi: Watchdog) -> None:
    assert exchange(shell_cgi, "GET", "/hello?lang=en&name=Ada")[::2] == (200, b"Hello, Ada!\n")


def test_shell_cgi_post_creates_with_status_location_and_cookie(shell_cgi: Watchdog) -> None:
    status, headers, body = exchange(
        shell_cgi, "POST", "/notes", b"remember the milk", [("Content-Type", "text/plain")]
    )
    assert status == 201
    assert headers["Location"] == "/notes/1"
    assert headers["Set-Cookie"] == "last-note=1; Path=/"
    assert json.loads(body) == {"id": 1, "bytes": 17, "type": "text/plain"}


def test_shell_cgi_location_only_redirects_with_302(shell_cgi: Watchdog) -> None:
    status, headers, body = exchange(shell_cgi, "GET", "/moved")
    assert (status, headers["Location"], body) == (302, "/", b"")


def test_shell_cgi_unknown_route_is_its_own_404(shell_cgi: Watchdog) -> None:
    status, _, body = exchange(shell_cgi, "DELETE", "/nothing")
    assert (status, body) == (404, b"no route for DELETE /nothing\n")


# --- the Flask example, compared with Flask's own test client -------------------------------------


def load_flask_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_cgi_example", FLASK_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flask_cgi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchdog]:
    watchdog = start_watchdog(
        tmp_path_factory.mktemp("flask-cgi"),
        fprocess=f"{sys.executable} {FLASK_APP}",
        **SERIALIZING_CGI,
    )
    yield watchdog
    watchdog.process.kill()
    watchdog.process.wait(10)


@pytest.fixture(scope="module")
def flask_reference() -> Callable[..., Exchange]:
    """The same request answered by Flask's test client: what the app itself says."""
    app = load_flask_example().app

    def answer(
        method: str,
        path: str,
        body: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Exchange:
        client = app.test_client()
        sent: list[tuple[str, str]] = []
        for name, value in headers or []:
            if name.lower() == "cookie":  # the test client keeps its own cookie jar
                for pair in value.split("; "):
                    key, _, cookie_value = pair.partition("=")
                    client.set_cookie(key, cookie_value)
            else:
                sent.append((name, value))
        response = client.open(path, method=method, data=body, headers=sent)
        message = http.client.HTTPMessage()
        for name, value in response.headers.items():
            message[name] = value
        return response.status_code, message, response.get_data()

    return answer


FLASK_CASES = [
    ("GET", "/", None, []),
    ("GET", "/items/1", None, []),
    ("GET", "/items/9", None, []),
    ("POST", "/items", b'{"name": "plum"}', [("Content-Type", "application/json")]),
    ("POST", "/items", b"not json", [("Content-Type", "text/plain")]),
    ("DELETE", "/items/2", None, []),
    ("POST", "/login", b"user=ann", [("Content-Type", "application/x-www-form-urlencoded")]),
    ("GET", "/me", None, [("Cookie", "session=token-for-ann; user=ann")]),
    ("GET", "/me", None, []),
    ("GET", "/old-home", None, []),
    ("GET", "/search?q=caf%C3%A9&page=2", None, [("X-Request-Id", "r-42")]),
    ("POST", "/echo", bytes(range(256)), [("Content-Type", "application/octet-stream")]),
    ("GET", "/boom", None, []),
    ("GET", "/no/such/route", None, []),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    FLASK_CASES,
    ids=[f"{method} {path}" for method, path, _, _ in FLASK_CASES],
)
def test_flask_example_answers_as_its_own_test_client_does(
    flask_cgi: Watchdog,
    flask_reference: Callable[..., Exchange],
    method: str,
    path: str,
    body: bytes | None,
    headers: list[tuple[str, str]],
) -> None:
    status, got, content = exchange(flask_cgi, method, path, body, headers)
    want_status, want, want_content = flask_reference(method, path, body, headers)
    assert status == want_status
    assert content == want_content
    for name in ("Content-Type", "Location", "Content-Length"):
        assert got[name] == want[name], name
    assert got.get_all("Set-Cookie") == want.get_all("Set-Cookie")


def test_flask_example_status_codes_types_cookies_and_redirects(flask_cgi: Watchdog) -> None:
    """The example's behaviour spelled out, so a change in Flask cannot hide a regression."""
    status, headers, body = exchange(
        flask_cgi,
        "POST",
        "/items",
        b'{"name": "plum"}',
        [("Content-Type", "application/json")],
    )
    assert (status, headers["Location"], headers["Content-Type"]) == (
        201,
        "/items/3",
        "application/json",
    )
    assert json.loads(body) == {"id": 3, "name": "plum"}

    status, headers, _ = exchange(
        flask_cgi,
        "POST",
        "/login",
        b"user=ann",
        [("Content-Type", "application/x-www-form-urlencoded")],
    )
    assert (status, headers["Location"]) == (302, "/me")
    cookies = headers.get_all("Set-Cookie") or []
    assert [cookie.split(";")[0] for cookie in cookies] == ["session=token-for-ann", "user=ann"]
    assert "HttpOnly" in cookies[0]

    cookie = "; ".join(cookie.split(";")[0] for cookie in cookies)
    status, headers, body = exchange(flask_cgi, "GET", "/me", None, [("Cookie", cookie)])
    assert (status, json.loads(body)) == (200, {"user": "ann", "session": "token-for-ann"})


def test_flask_example_reads_a_chunked_body_through_content_length(flask_cgi: Watchdog) -> None:
    with socket.create_connection(("127.0.0.1", flask_cgi.port), timeout=30) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            b"6\r\nchunky\r\n6\r\n body!\r\n0\r\n\r\n"
        )
        response = read_response(sock)
    assert (response.status, response.body) == (200, b"chunky body!")


def test_flask_example_exception_is_flask_500_and_traceback_in_log(flask_cgi: Watchdog) -> None:
    status, headers, _ = exchange(flask_cgi, "GET", "/boom")
    assert status == 500
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    flask_cgi.wait_for_log("stderr: RuntimeError: this route always fails")


def test_flask_example_runs_unchanged_under_the_example_path() -> None:
    # The example is a plain CGI program: nothing in it refers to fwatchdog's internals.
    source = Path(FLASK_APP).read_text()
    assert "from wsgiref.handlers import CGIHandler" in source
    assert "import fwatchdog" not in source
