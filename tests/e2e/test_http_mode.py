"""HTTP mode, end to end: the real watchdog in front of a real upstream server started through
`fprocess` (tests/functions/httpmode_server.py, a small http.server)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import (
    Watchdog,
    function,
    health,
    http_mode_settings,
    process_gone,
    read_until,
    start_watchdog,
    wait_until,
)
from raw_http import read_response, read_to_end

Factory = Callable[..., Watchdog]

SERVER = function("httpmode_server.py")
WRAPPER = function("httpmode_wrapper.sh")
INTERNAL = "of-watchdog"


# --- helpers --------------------------------------------------------------------------------------


def end_child(watchdog: Watchdog) -> None:
    """Kill the child's group: it runs in a session of its own and outlives a killed watchdog."""
    for match in re.finditer(r"Started fprocess \(pid (\d+)\)", watchdog.log()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(match.group(1)), signal.SIGKILL)


@pytest.fixture
def http_factory(watchdog_factory: Factory) -> Iterator[Factory]:
    """`watchdog_factory`, and the children of the watchdogs it started killed afterwards."""
    started: list[Watchdog] = []

    def factory(wait: bool = True, **settings: str) -> Watchdog:
        watchdog = watchdog_factory(wait=wait, **settings)
        started.append(watchdog)
        return watchdog

    yield factory
    for watchdog in started:
        end_child(watchdog)


def start_http(factory: Factory, **settings: str) -> Watchdog:
    """An http mode watchdog whose upstream accepts connections (health 200)."""
    watchdog = factory(**http_mode_settings(**settings))
    if not wait_until(lambda: health(watchdog) == 200, timeout=10.0):
        raise AssertionError(f"never healthy:\n{watchdog.log()}")
    return watchdog


def request(
    watchdog: Watchdog,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = 10.0,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request whose headers may repeat: status, headers (all values), body."""
    return watchdog.exchange(method, path, body, headers, timeout)


def echo(
    watchdog: Watchdog,
    method: str = "POST",
    path: str = "/echo",
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """What the upstream's /echo saw of the request."""
    status, _, answer = request(watchdog, method, path, body, headers)
    assert status == 200, answer
    seen: dict[str, Any] = json.loads(answer)
    return seen


def raw_connection(watchdog: Watchdog, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", watchdog.port), timeout=timeout)


def assert_internal_error(
    status: int, headers: http.client.HTTPMessage, body: bytes, expected: int
) -> None:
    """A response the watchdog made up itself: marked, timed, one line."""
    assert status == expected, body
    assert headers["X-OpenFaaS-Internal"] == INTERNAL
    assert re.fullmatch(r"\d+\.\d{6}", headers["X-Duration-Seconds"])
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and len(body) > 1


def child_pid(watchdog: Watchdog) -> int:
    status, _, body = request(watchdog, "GET", "/pid")
    assert status == 200
    return int(body)


def start_slow_request(watchdog: Watchdog, seconds: float) -> socket.socket:
    """A connection whose request the upstream is busy with for `seconds`."""
    sock = raw_connection(watchdog)
    sock.sendall(f"GET /sleep?s={seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    watchdog.wait_for_log(f"stderr: sleeping {seconds}")
    return sock


# One watchdog for the tests that leave it as they found it. One process: some tests follow
# a pooled upstream connection from request to request (tests/e2e/test_http_workers.py has
# the tests of several processes).
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchdog]:
    watchdog = start_watchdog(
        tmp_path_factory.mktemp("http-mode"), **http_mode_settings(http_workers="1")
    )
    try:
        if not wait_until(lambda: health(watchdog) == 200, timeout=10.0):
            raise AssertionError(f"never healthy:\n{watchdog.log()}")
        yield watchdog
    finally:
        if watchdog.process.poll() is None:
            watchdog.process.send_signal(signal.SIGTERM)
            watchdog.process.wait(10)
        end_child(watchdog)


# --- 1. the child process -------------------------------------------------------------------------


def test_child_stdout_and_stderr_lines_are_logged_with_their_stream(shared: Watchdog) -> None:
    log = shared.wait_for_log("stderr: ready on stderr too")
    assert re.search(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d stdout: listening on \d+$", log, re.M)


def test_child_runs_in_a_process_group_of_its_own(shared: Watchdog) -> None:
    pid = child_pid(shared)
    assert os.getpgid(pid) == pid
    assert os.getpgid(pid) != os.getpgid(shared.process.pid)


def test_child_is_started_once_for_all_requests(shared: Watchdog) -> None:
    assert len({child_pid(shared) for _ in range(3)}) == 1


def test_child_output_is_logged_as_json_with_log_format_json(http_factory: Factory) -> None:
    watchdog = start_http(http_factory, log_format="json")
    log = watchdog.wait_for_log('"stream": "stderr"')
    lines = [json.loads(line) for line in log.splitlines()]
    assert {"stream": "stdout", "msg": "listening on " + watchdog.env["UPSTREAM_PORT"]}.items() <= {
        key: value
        for line in lines
        if line.get("stream") == "stdout"
        for key, value in line.items()
    }.items()


def test_child_exit_fails_in_flight_with_502_turns_health_503_and_exits_nonzero(
    http_factory: Factory,
) -> None:
    watchdog = start_http(http_factory)
    status, headers, body = request(watchdog, "GET", "/exit?code=3")
    assert_internal_error(status, headers, body, 502)
    log = watchdog.wait_for_log("Forked function has terminated: exit status 3")
    assert "exiting with 3" in log
    assert not watchdog.lock_path.exists() or health(watchdog) != 200
    assert watchdog.process.wait(10) != 0


def test_child_exiting_with_0_also_ends_the_watchdog_nonzero(http_factory: Factory) -> None:
    watchdog = start_http(http_factory)
    assert request(watchdog, "GET", "/exit?code=0")[0] == 502
    watchdog.wait_for_log("Forked function has terminated: exit status 0")
    assert watchdog.process.wait(10) != 0


def test_child_leader_exit_ends_its_group_so_requests_in_flight_get_502(
    http_factory: Factory,
) -> None:
    # The wrapper script is the group's leader; the server it started would run on without it.
    watchdog = start_http(http_factory, fprocess=f"/bin/sh {WRAPPER} {sys.executable} {SERVER}")
    server_pid = child_pid(watchdog)
    leader_pid = os.getpgid(server_pid)
    assert leader_pid != server_pid
    with start_slow_request(watchdog, 5) as sock:
        os.kill(leader_pid, signal.SIGKILL)
        received = read_until(sock, b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 502 ")
    assert b"X-OpenFaaS-Internal: of-watchdog" in received
    assert watchdog.process.wait(10) != 0
    assert process_gone(server_pid)


def test_requests_after_the_child_exited_get_502_naming_the_exit(
    http_factory: Factory,
) -> None:
    watchdog = start_http(http_factory)
    os.kill(child_pid(watchdog), signal.SIGKILL)
    watchdog.wait_for_log("Forked function has terminated: signal: killed")
    try:
        status, headers, body = request(watchdog, "GET", "/echo")
    except (ConnectionError, http.client.RemoteDisconnected):
        return  # the watchdog has already exited, as it should once the server reacts
    assert_internal_error(status, headers, body, 502)
    assert b"signal: killed" in body


# --- 2. readiness ---------------------------------------------------------------------------------


def test_health_and_lock_file_wait_until_the_upstream_accepts_connections(
    http_factory: Factory,
) -> None:
    watchdog = http_factory(**http_mode_settings(STARTUP_DELAY="1.0"))
    # The listener is open at once, but nothing says healthy yet.
    assert health(watchdog) == 503
    assert not watchdog.lock_path.exists()
    assert wait_until(lambda: health(watchdog) == 200, timeout=10.0)
    assert watchdog.lock_path.exists()
    log = watchdog.log()
    assert log.index("Upstream http://127.0.0.1") < log.index("Writing lock-file")


def test_request_sent_before_the_upstream_listens_waits_and_succeeds(
    http_factory: Factory,
) -> None:
    watchdog = http_factory(**http_mode_settings(STARTUP_DELAY="1.0"))
    began = time.monotonic()
    status, _, body = request(watchdog, "POST", "/echo", b"early")
    assert status == 200
    assert json.loads(body)["body"] == "early"
    assert time.monotonic() - began > 0.5


def test_request_waiting_longer_than_exec_timeout_for_the_upstream_gets_503(
    http_factory: Factory,
) -> None:
    watchdog = http_factory(**http_mode_settings(STARTUP_DELAY="5", exec_timeout="300ms"))
    began = time.monotonic()
    status, headers, body = request(watchdog, "GET", "/echo")
    assert_internal_error(status, headers, body, 503)
    assert 0.25 < time.monotonic() - began < 3


def test_waiting_for_the_upstream_is_logged_every_few_seconds(http_factory: Factory) -> None:
    watchdog = http_factory(**http_mode_settings(STARTUP_DELAY="2.5"))
    watchdog.wait_for_log("Waiting for the upstream http://127.0.0.1:", timeout=5)
    assert wait_until(lambda: health(watchdog) == 200, timeout=10.0)


def test_child_that_exits_before_listening_stops_start_up_with_its_exit_status(
    http_factory: Factory,
) -> None:
    watchdog = http_factory(wait=False, **http_mode_settings(UPSTREAM_PORT="not-a-port"))
    assert watchdog.process.wait(10) == 1
    log = watchdog.log()
    assert "fprocess exited before http://127.0.0.1:" in log
    assert "exit status 1" in log
    assert not watchdog.lock_path.exists()


def test_fprocess_that_cannot_start_stops_start_up_naming_it(http_factory: Factory) -> None:
    settings = http_mode_settings(fprocess="/no/such/server")
    watchdog = http_factory(wait=False, **settings)
    assert watchdog.process.wait(10) == 1
    assert '"/no/such/server"' in watchdog.log()


# --- 3. proxying ----------------------------------------------------------------------------------


def test_method_raw_target_headers_in_order_and_body_reach_the_upstream(shared: Watchdog) -> None:
    seen = echo(
        shared,
        method="PATCH",
        path="/echo?a=1&b=%20x%2F#",
        body=b"payload",
        headers=[("X-Multi", "one"), ("Host", "example.test:8080"), ("X-Multi", "two")],
    )
    assert seen["method"] == "PATCH"
    assert seen["target"] == "/echo?a=1&b=%20x%2F#"
    assert seen["headers"] == [
        ["X-Multi", "one"],
        ["Host", "example.test:8080"],
        ["X-Multi", "two"],
        ["Content-Length", "7"],
    ]
    assert seen["body"] == "payload"


def test_hop_by_hop_request_headers_are_not_forwarded(shared: Watchdog) -> None:
    seen = echo(
        shared,
        body=b"",
        headers=[
            ("Connection", "keep-alive, X-Drop-Me"),
            ("X-Drop-Me", "listed in Connection"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Proxy-Authorization", "Basic abc"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Kept", "yes"),
        ],
    )
    names = [name.lower() for name, _ in seen["headers"]]
    assert "x-kept" in names
    for dropped in (
        "connection",
        "x-drop-me",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
    ):
        assert dropped not in names
    assert "proxy-connection" not in names


def test_hop_by_hop_response_headers_are_not_returned(shared: Watchdog) -> None:
    status, headers, body = request(shared, "GET", "/hop")
    assert (status, body) == (200, b"hop\n")
    assert headers["X-Visible"] == "shown"
    for dropped in ("X-Secret", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert dropped not in headers
    # Ours replaces the upstream's.
    assert headers.get_all("X-Duration-Seconds") != ["99"]
    assert len(headers.get_all("X-Duration-Seconds") or []) == 1


def test_node_s_keep_alive_fields_stop_here(shared: Watchdog) -> None:
    # Node's server puts Connection and Keep-Alive on every answer; both stop at this hop.
    connection = shared.connection()
    for _ in range(3):  # the first answer and the same bytes again
        connection.request("GET", "/node")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"node\n")
        assert response.getheader("X-Powered-By") == "Express"
        assert response.getheader("Keep-Alive") is None
        assert response.getheader("Connection") is None
    connection.close()


def test_repeated_set_cookie_headers_are_all_returned(shared: Watchdog) -> None:
    status, headers, _ = request(shared, "GET", "/cookies")
    assert status == 200
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2; Path=/"]


@pytest.mark.parametrize("code", [301, 302, 307])
def test_redirects_are_returned_not_followed(shared: Watchdog, code: int) -> None:
    status, headers, body = request(shared, "GET", f"/status?code={code}")
    assert (status, body) == (code, f"status {code}\n".encode())
    assert headers["Location"] == "/elsewhere"


def test_upstream_status_and_body_come_back_unchanged(shared: Watchdog) -> None:
    status, headers, body = request(shared, "DELETE", "/status?code=418")
    assert (status, body) == (418, b"status 418\n")
    assert "X-OpenFaaS-Internal" not in headers


def test_responses_carry_x_duration_seconds(shared: Watchdog) -> None:
    _, headers, _ = request(shared, "GET", "/status?code=200")
    assert re.fullmatch(r"\d+\.\d{6}", headers["X-Duration-Seconds"])


def test_a_request_is_logged_once_with_the_status_sent(shared: Watchdog) -> None:
    request(shared, "GET", "/status?code=201&log-once")
    log = shared.wait_for_log("GET /status?code=201&log-once - 201 - ContentLength: 11B")
    assert log.count("/status?code=201&log-once") == 1


def test_keep_alive_connections_to_the_upstream_are_reused(shared: Watchdog) -> None:
    ports = {echo(shared, body=b"x")["peer_port"] for _ in range(3)}
    assert len(ports) == 1


def test_pipelined_requests_on_both_paths_are_answered_in_order(shared: Watchdog) -> None:
    """One write carrying requests the pooled path takes (whole bodies), a probe, and one that
    must wait for the first to finish: the answers come back in order, each with its body."""
    echo(shared, body=b"warm-up")
    batch = (
        b"POST /echo?n=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
        b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo?n=4 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nfour"
    )
    with raw_connection(shared) as sock:
        sock.sendall(batch)
        received = read_until(sock, b'"body": "four"}')
    heads = re.findall(rb"HTTP/1\.1 (\d+) ", received)
    assert heads == [b"200"] * 4
    first, sleep, health, fourth = (
        received.index(b'"body": "one"'),
        received.index(b"slept\n"),
        received.index(b"\r\n\r\nOK"),
        received.index(b'"body": "four"'),
    )
    assert first < sleep < health < fourth


def test_a_request_sent_while_a_relayed_one_is_in_flight_is_answered_after_it(
    shared: Watchdog,
) -> None:
    """An answer passed on as it came is written at the end of the loop's turn (the Writer);
    a probe that arrived while it was in flight is answered after it."""
    with raw_connection(shared) as sock:
        sock.sendall(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        shared.wait_for_log("sleeping 0.3")
        sock.sendall(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n")
        received = read_until(sock, b"\r\n\r\nOK")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.index(b"slept\n") < received.index(b"\r\n\r\nOK")


def test_head_gets_the_headers_only_and_the_pooled_connection_stays_usable(
    shared: Watchdog,
) -> None:
    status, headers, body = request(shared, "HEAD", "/echo")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0
    assert echo(shared, body=b"after head")["body"] == "after head"


def test_response_delimited_by_closing_the_connection_arrives_whole(shared: Watchdog) -> None:
    status, _, body = request(shared, "GET", "/until-eof")
    assert (status, body) == (200, b"all of it\n")


def test_a_whole_simple_answer_is_passed_on_as_it_came(shared: Watchdog) -> None:
    """On a pooled connection, a small answer that arrives whole is passed on byte for byte,
    less its Connection field, plus X-Duration-Seconds; the upstream's Date is kept."""
    with raw_connection(shared) as sock:
        for _ in range(3):  # the first may need a new upstream connection; the rest are pooled
            sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_response(sock)
            head, body = answer.raw_head, answer.body
    assert body == b"whole\n"
    assert re.fullmatch(
        rb"HTTP/1\.1 200 OK\r\nServer: whole\r\nDate: Sat, 28 Nov 2026 03:00:00 GMT\r\n"
        rb"Content-Length: 6\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
        rb"X-Duration-Seconds: \d+\.\d{6}",
        head,
    ), head


def test_the_same_request_again_still_goes_to_the_upstream_every_time(shared: Watchdog) -> None:
    """Repeated byte for byte, a request still goes upstream every time (nothing is answered
    from memory of an earlier request), and each answer comes back."""
    request_bytes = b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    with raw_connection(shared) as sock:
        counts = []
        for _ in range(5):
            sock.sendall(request_bytes)
            answer = read_response(sock)
            head, body = answer.raw_head, answer.body
            assert re.fullmatch(
                rb"HTTP/1\.1 200 OK\r\nContent-Length: \d+\r\nX-Duration-Seconds: \d+\.\d{6}\r\n"
                rb"Date: [^\r]+ GMT",
                head,
            ), head
            counts.append(int(body))
    assert counts == list(range(counts[0], counts[0] + 5))
    shared.wait_for_log("POST /count - 200 - ContentLength: ")


def test_repeated_requests_keep_their_call_id_and_repeated_probes_stay_unlogged(
    http_factory: Factory,
) -> None:
    """A repeated request reuses what its first answer worked out for its log line (its
    call id, whether it is a Kubernetes probe): each answer is still logged and counted."""
    watchdog = start_http(http_factory, log_callid="true")
    call = b"POST /count HTTP/1.1\r\nHost: x\r\nX-Call-Id: call-7\r\nContent-Length: 2\r\n\r\nhi"
    probe = b"GET /whole HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.29\r\n\r\n"
    with raw_connection(watchdog) as sock:
        for _ in range(3):
            for request_bytes in (call, probe):
                sock.sendall(request_bytes)
                assert read_response(sock).raw_head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert wait_until(lambda: watchdog.log().count("POST /count - 200") == 3, timeout=5.0)
    log = watchdog.log()
    calls = [line for line in log.splitlines() if "POST /count - 200" in line]
    assert all(line.endswith(" [call-7]") for line in calls), calls
    assert "GET /whole" not in log
    metrics = watchdog.metrics().splitlines()
    assert 'http_requests_total{code="200",method="get"} 3.0' in metrics
    assert 'http_requests_total{code="200",method="post"} 3.0' in metrics


def test_a_request_waiting_on_the_upstream_is_not_taken_for_an_idle_connection(
    http_factory: Factory,
) -> None:
    """The idle timeout (read_timeout here) starts once an answer is complete: on every path,
    a slow upstream answer longer than it still arrives."""
    watchdog = start_http(http_factory, read_timeout="1s", exec_timeout="10s")
    with raw_connection(watchdog) as sock:
        for _ in range(3):  # a task, then passed on as it came, then known byte for byte
            sock.sendall(b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_response(sock)
            head, body = answer.raw_head, answer.body
            assert (head.split(b"\r\n")[0], body) == (b"HTTP/1.1 200 OK", b"slept\n")


def test_answers_that_cannot_pass_as_they_came_are_taken_apart_on_a_pooled_connection(
    shared: Watchdog,
) -> None:
    """A request passed on as it came whose answer is not simple (no body by status, chunked,
    hop-by-hop fields, in several reads) is relayed the general way, and the connection
    carries on."""
    with raw_connection(shared) as sock:
        sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).body == b"whole\n"  # an upstream connection is pooled
        sock.sendall(b"GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = read_response(sock).raw_head
        assert head.startswith(b"HTTP/1.1 204 ")
        assert b"X-Duration-Seconds: " in head
        sock.sendall(b"GET /hop HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_response(sock)
        head, body = answer.raw_head, answer.body
        assert body == b"hop\n"
        assert b"X-Visible: shown" in head
        assert b"X-Secret" not in head
        assert b"Keep-Alive" not in head
        sock.sendall(b"GET /bytes?n=200000 HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_response(sock)
        head, body = answer.raw_head, answer.body
        assert body == (bytes(range(256)) * 256 * 4)[:200000]
        sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).body == b"whole\n"


def test_chunked_request_body_streams_to_the_upstream_as_it_arrives(shared: Watchdog) -> None:
    with raw_connection(shared) as sock:
        sock.sendall(
            b"POST /stream-echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\none\r\n"
        )
        # The upstream answers the first chunk before the second one is even sent.
        received = read_until(sock, b"got one\n")
        sock.sendall(b"3\r\ntwo\r\n")
        received = read_until(sock, b"got two\n", received)
        sock.sendall(b"0\r\n\r\n")
        received = read_until(sock, b"0\r\n\r\n", received)
    assert received.startswith(b"HTTP/1.1 200 ")


def test_chunked_request_body_goes_upstream_chunked(shared: Watchdog) -> None:
    conn = shared.connection()
    try:
        conn.request("POST", "/echo", body=iter([b"ab", b"cd"]))
        seen = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert (seen["framing"], seen["body"]) == ("chunked", "abcd")


@pytest.mark.parametrize("setting", ["buffer_http", "http_buffer_req_body"])
def test_buffered_body_goes_upstream_with_content_length(
    http_factory: Factory, setting: str
) -> None:
    watchdog = start_http(http_factory, **{setting: "true"})
    conn = watchdog.connection()
    try:
        conn.request("POST", "/echo", body=iter([b"ab", b"cd", b"ef"]))
        seen = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert (seen["framing"], seen["body"]) == ("length 6", "abcdef")
    assert ["Content-Length", "6"] in seen["headers"]


def test_large_request_body_reaches_the_upstream_intact(shared: Watchdog) -> None:
    body = os.urandom(1 << 20) * 24
    status, _, answer = request(shared, "PUT", "/sink", body)
    assert (status, answer) == (200, f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode())


def test_large_response_body_reaches_a_slow_client_intact(shared: Watchdog) -> None:
    size = 32 << 20
    block = bytes(range(256)) * 256
    conn = shared.connection()
    try:
        conn.request("GET", f"/bytes?n={size}")
        response = conn.getresponse()
        assert response.status == 200
        received = 0
        while piece := response.read(1 << 20):
            assert piece == (block * 17)[received % len(block) :][: len(piece)]
            received += len(piece)
            if received < (4 << 20):
                time.sleep(0.01)  # fill every buffer on the way, so back-pressure has to work
    finally:
        conn.close()
    assert received == size


def test_expect_100_continue_is_answered_and_the_body_forwarded(shared: Watchdog) -> None:
    with raw_connection(shared) as sock:
        sock.sendall(
            b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        received = read_until(sock, b"\n", b"")
        received = read_until(sock, hashlib.sha256(b"hello").hexdigest().encode(), received)
    assert b"HTTP/1.1 200 " in received
    assert b"5 " + hashlib.sha256(b"hello").hexdigest().encode() in received


def test_stale_pooled_connection_is_retried_once_for_a_get(shared: Watchdog) -> None:
    assert request(shared, "POST", "/then-drop", b"")[0] == 200
    # The upstream closes the pooled connection when this request arrives on it.
    seen = echo(shared, method="GET")
    assert seen["method"] == "GET"
    shared.wait_for_log("stderr: dropped GET /echo HTTP/1.1")


def test_a_post_dropped_by_the_upstream_is_not_sent_again(shared: Watchdog) -> None:
    assert request(shared, "POST", "/then-drop", b"")[0] == 200
    status, headers, body = request(shared, "POST", "/echo?once=1", b"charge the card")
    assert status == 502, body
    assert headers.get("X-OpenFaaS-Internal") == "of-watchdog"
    shared.wait_for_log("stderr: dropped POST /echo?once=1 HTTP/1.1")
    assert shared.log().count("dropped POST /echo?once=1 ") == 1


def test_a_post_with_an_idempotency_key_is_sent_again(shared: Watchdog) -> None:
    assert request(shared, "POST", "/then-drop", b"")[0] == 200
    seen = echo(shared, body=b"sent twice", headers=[("Idempotency-Key", "k-1")])
    assert seen["body"] == "sent twice"
    shared.wait_for_log("stderr: dropped POST /echo HTTP/1.1")


def test_stale_pooled_connection_is_retried_with_the_body_streamed_so_far(
    shared: Watchdog,
) -> None:
    assert request(shared, "POST", "/then-drop?after=body", b"")[0] == 200
    with raw_connection(shared) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Idempotency-Key: k-2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        shared.wait_for_log("stderr: dropped POST /echo HTTP/1.1")
        sock.sendall(b"6\r\nsecond\r\n0\r\n\r\n")
        received = read_until(sock, b"}")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b'"body": "firstsecond"' in received


def test_stale_pooled_connection_is_not_retried_once_more_body_went_out_than_is_kept(
    shared: Watchdog,
) -> None:
    assert request(shared, "POST", "/then-drop?after=body", b"")[0] == 200
    big = b"x" * (100 * 1024)
    with raw_connection(shared) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(big) + big + b"\r\n"
        )
        received = read_until(sock, b"\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 502 ")
    assert b"X-OpenFaaS-Internal: of-watchdog" in received


# --- 4. streaming responses -----------------------------------------------------------------------


def test_server_sent_events_arrive_event_by_event(shared: Watchdog) -> None:
    with raw_connection(shared) as sock:
        sock.sendall(
            b"GET /sse?key=sse1&n=3 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        received = read_until(sock, b"data: event 1\n\n")
        head = received.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Type: text/event-stream" in head
        assert re.search(rb"X-Duration-Seconds: \d+\.\d{6}", head)
        # The upstream holds the next event until told; it must not be here yet.
        assert b"event 2" not in received
        for number in (2, 3):
            assert request(shared, "GET", f"/release?key=sse1-{number}")[0] == 200
            received = read_until(sock, f"data: event {number}\n\n".encode(), received)
        received = read_until(sock, b"0\r\n\r\n", received)
    assert b"gave up" not in received
    shared.wait_for_log("GET /sse?key=sse1&n=3 - 200")


def test_event_stream_is_cut_by_exec_timeout_like_any_response(
    http_factory: Factory,
) -> None:
    watchdog = start_http(http_factory, exec_timeout="700ms")
    with raw_connection(watchdog) as sock:
        sock.sendall(
            b"GET /sse?key=cut&n=2 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        received = read_to_end(sock)
    assert b"data: event 1\n\n" in received
    assert not received.endswith(b"0\r\n\r\n"), "a cut stream must not end cleanly"
    watchdog.wait_for_log("exec_timeout (700ms) exceeded")


# --- 5. upgrades ----------------------------------------------------------------------------------


def websocket_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def test_websocket_echo_round_trip(shared: Watchdog) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    with raw_connection(shared) as sock:
        sock.sendall(
            (
                "GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        received = read_until(sock, b"\r\n\r\n")
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"Upgrade: websocket" in head
        sock.sendall(websocket_frame(b"hello through the tunnel"))
        rest = read_until(sock, b"hello through the tunnel", rest)
        assert rest == b"\x81\x18hello through the tunnel"
        sock.sendall(websocket_frame(b"", opcode=0x8))
        assert read_to_end(sock) == b"\x88\x00"
    log = shared.wait_for_log("GET /websocket - 101")
    assert log.count("GET /websocket") == 1


def test_101_the_client_did_not_ask_for_gives_502(shared: Watchdog) -> None:
    status, headers, body = request(shared, "GET", "/websocket")
    assert_internal_error(status, headers, body, 502)


# --- 6. timeouts and errors -----------------------------------------------------------------------


def test_exec_timeout_gives_504_from_the_watchdog(http_factory: Factory) -> None:
    watchdog = start_http(http_factory, exec_timeout="500ms")
    began = time.monotonic()
    status, headers, body = request(watchdog, "GET", "/sleep?s=5")
    assert_internal_error(status, headers, body, 504)
    assert b"exec_timeout (500ms) exceeded" in body
    assert time.monotonic() - began < 3


# A request whose body is all here goes out on an idle pooled connection without a task
# (`HttpMode.answer_now`); the first request of a watchdog finds no idle connection and takes
# the task path. Timeouts and clients leaving must come out the same on both.
# The three ways a request can go out: in a task (no idle pooled connection yet), as the bytes
# it came as, or with its head rewritten (a hop-by-hop field to drop); one _Exchange each time.
PATHS = {
    "first request (task path)": (False, []),
    "pooled connection, passed on as it came": (True, []),
    "pooled connection, head rewritten": (True, [("Keep-Alive", "timeout=5")]),
}


def warmed(watchdog: Watchdog, warm: bool) -> Watchdog:
    if warm:
        assert echo(watchdog, body=b"warm-up")["body"] == "warm-up"
    return watchdog


@pytest.mark.parametrize(("warm", "extra"), PATHS.values(), ids=PATHS.keys())
def test_exec_timeout_gives_504_on_every_path_and_the_next_request_is_served(
    http_factory: Factory, warm: bool, extra: list[tuple[str, str]]
) -> None:
    watchdog = warmed(start_http(http_factory, exec_timeout="500ms"), warm)
    began = time.monotonic()
    status, headers, body = request(watchdog, "GET", "/sleep?s=5", headers=extra)
    assert_internal_error(status, headers, body, 504)
    assert body == b"exec_timeout (500ms) exceeded\n"
    assert time.monotonic() - began < 3
    assert echo(watchdog, body=b"after")["body"] == "after"


@pytest.mark.parametrize(("warm", "extra"), PATHS.values(), ids=PATHS.keys())
def test_write_timeout_bounds_a_proxied_request_on_every_path(
    http_factory: Factory, warm: bool, extra: list[tuple[str, str]]
) -> None:
    watchdog = warmed(start_http(http_factory, exec_timeout="0", write_timeout="700ms"), warm)
    status, _, body = request(watchdog, "GET", "/sleep?s=5", headers=extra)
    assert status == 504
    assert body == b"write_timeout (700ms) exceeded\n"
    assert echo(watchdog, body=b"after")["body"] == "after"


@pytest.mark.parametrize(("warm", "extra"), PATHS.values(), ids=PATHS.keys())
def test_client_leaving_mid_request_is_logged_499_and_nothing_stays_in_flight(
    http_factory: Factory, warm: bool, extra: list[tuple[str, str]]
) -> None:
    watchdog = warmed(start_http(http_factory), warm)
    fields = "".join(f"{name}: {value}\r\n" for name, value in extra)
    with raw_connection(watchdog) as sock:
        sock.sendall(f"GET /sleep?s=1.5 HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        watchdog.wait_for_log("stderr: sleeping 1.5")
    watchdog.wait_for_log("GET /sleep?s=1.5 - 499 - ")
    assert "http_requests_in_flight 0.0" in watchdog.metrics().splitlines()
    assert echo(watchdog, body=b"after")["body"] == "after"


def test_x_timeout_header_shortens_the_timeout_for_one_request(shared: Watchdog) -> None:
    began = time.monotonic()
    status, headers, body = request(shared, "GET", "/sleep?s=5", headers=[("X-Timeout", "300ms")])
    assert_internal_error(status, headers, body, 504)
    assert b"X-Timeout (300ms) exceeded" in body
    assert time.monotonic() - began < 3
    # The header goes to the upstream too.
    seen = echo(shared, body=b"", headers=[("X-Timeout", "2s")])
    assert ["X-Timeout", "2s"] in seen["headers"]


def test_x_timeout_longer_than_exec_timeout_is_ignored(http_factory: Factory) -> None:
    watchdog = start_http(http_factory, exec_timeout="500ms")
    status, _, body = request(watchdog, "GET", "/sleep?s=5", headers=[("X-Timeout", "1m")])
    assert status == 504
    assert b"exec_timeout (500ms)" in body


def test_x_timeout_is_ignored_when_exec_timeout_is_0(http_factory: Factory) -> None:
    watchdog = start_http(http_factory, exec_timeout="0")
    status, _, body = request(watchdog, "GET", "/sleep?s=0.5", headers=[("X-Timeout", "100ms")])
    assert (status, body) == (200, b"slept\n")


def test_upstream_refusing_connections_gives_502(http_factory: Factory) -> None:
    watchdog = start_http(http_factory)
    assert request(watchdog, "GET", "/stop-listening")[0] == 200
    status, headers, body = request(watchdog, "GET", "/echo")
    assert_internal_error(status, headers, body, 502)
    assert b"cannot connect to the upstream" in body


def test_upstream_reset_before_answering_gives_502(shared: Watchdog) -> None:
    status, headers, body = request(shared, "POST", "/reset", b"x")
    assert_internal_error(status, headers, body, 502)


def test_malformed_upstream_response_gives_502(shared: Watchdog) -> None:
    status, headers, body = request(shared, "GET", "/garbage")
    assert_internal_error(status, headers, body, 502)


@pytest.mark.parametrize("path", ["/cut-length", "/cut-chunked"])
def test_response_broken_mid_body_is_cut_off_not_ended_cleanly(shared: Watchdog, path: str) -> None:
    conn = shared.connection()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()


# --- 7. shutdown ----------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_before_terminating_the_child(
    http_factory: Factory,
) -> None:
    watchdog = start_http(http_factory, healthcheck_interval="300ms")
    pid = child_pid(watchdog)
    with start_slow_request(watchdog, 1.5) as sock:
        watchdog.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: health(watchdog) == 503, timeout=1)
        # The child is left alone while the request is in flight.
        time.sleep(0.5)
        assert "SIGTERM received" not in watchdog.log()
        received = read_until(sock, b"slept\n")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert watchdog.process.wait(10) == 0
    log = watchdog.log()
    assert log.index("GET /sleep?s=1.5 - 200") < log.index("stderr: SIGTERM received")
    assert process_gone(pid)


def test_child_ignoring_sigterm_is_killed_after_write_timeout(http_factory: Factory) -> None:
    watchdog = start_http(http_factory, IGNORE_SIGTERM="1", write_timeout="1s")
    pid = child_pid(watchdog)
    signalled = time.monotonic()
    watchdog.process.send_signal(signal.SIGTERM)
    assert watchdog.process.wait(10) == 0
    assert 0.9 < time.monotonic() - signalled < 5
    assert "stderr: SIGTERM received" in watchdog.log()
    assert "signal: killed" in watchdog.log()
    assert process_gone(pid)


def test_child_exiting_during_the_drain_does_not_cut_requests_in_flight(
    http_factory: Factory,
) -> None:
    # The wrapper script is the group's leader; the server it started runs on without it.
    # healthcheck_interval keeps the listener open long enough after SIGTERM to see the 503.
    watchdog = start_http(
        http_factory,
        fprocess=f"/bin/sh {WRAPPER} {sys.executable} {SERVER}",
        healthcheck_interval="2s",
    )
    server_pid = child_pid(watchdog)
    leader_pid = os.getpgid(server_pid)
    assert leader_pid != server_pid
    with start_slow_request(watchdog, 1.5) as sock:
        watchdog.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: health(watchdog) == 503, timeout=1)
        os.kill(leader_pid, signal.SIGKILL)
        watchdog.wait_for_log("Forked function has terminated: signal: killed")
        received = read_until(sock, b"slept\n")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert watchdog.process.wait(10) == 0
    assert process_gone(server_pid)


def test_child_dies_with_a_sigkilled_watchdog(http_factory: Factory) -> None:
    watchdog = start_http(http_factory)
    pid = child_pid(watchdog)
    watchdog.process.kill()  # no chance to stop the child itself
    watchdog.process.wait(5)
    assert wait_until(lambda: process_gone(pid), timeout=5), "the child outlived the watchdog"
