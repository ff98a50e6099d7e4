"""Afterburn mode, end to end: the real watchdog and real long-lived function processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import ROOT, Watchdog, function
from raw_http import read_response

Factory = Callable[..., Watchdog]

RAW = function("ab_raw.py")
PYTHON = sys.executable


def afterburn(factory: Factory, fprocess: str, **settings: str) -> Watchdog:
    settings.setdefault("exec_timeout", "5s")
    return factory(mode="afterburn", fprocess=fprocess, **settings)


def python_function(name: str) -> str:
    return f"{PYTHON} {function(name)}"


def wait_for_exit(watchdog: Watchdog, timeout: float = 10.0) -> int:
    return watchdog.process.wait(timeout)


# --- the protocol, spoken by hand --------------------------------------------------------------


def test_afterburn_relays_request_and_response_through_one_process(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    status, headers, body = watchdog.request("POST", "/echo?x=1", b"hello")
    assert status == 200
    assert body == b"POST /echo?x=1 hello"
    assert headers["Content-Type"] == "text/plain"
    # The same process answers every request.
    pids = {watchdog.request("GET", "/pid")[2] for _ in range(5)}
    assert len(pids) == 1


def test_afterburn_always_sends_content_length_even_for_empty_bodies(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    status, headers, body = watchdog.request("GET", "/echo")
    assert status == 200
    assert body == b"GET /echo "
    assert "Content-Length" in headers["X-Header-Names"].split(",")


def test_afterburn_dechunks_a_chunked_request_body(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    reply = watchdog.raw(
        b"POST /chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"POST /chunky abcdefg")
    names = next(line for line in reply.split(b"\r\n") if line.startswith(b"X-Header-Names"))
    assert b"Transfer-Encoding" not in names
    assert b"Connection" not in names
    assert b"Content-Length" in names


def test_afterburn_relays_status_headers_and_chunked_responses(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    status, headers, body = watchdog.request("GET", "/status/418")
    assert (status, body, headers["X-Status"]) == (418, b"as asked", "set")
    status, headers, body = watchdog.request("GET", "/chunked")
    assert (status, body) == (201, b"hello world")
    assert headers["Content-Type"] == "text/x-chunks"


def test_afterburn_streams_a_chunked_response_as_it_is_written(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    conn = watchdog.connection()
    conn.request("GET", "/stream")
    response = conn.getresponse()
    began = time.monotonic()
    first = response.read1(100)
    first_after = time.monotonic() - began
    rest = response.read()
    total_after = time.monotonic() - began
    conn.close()
    assert first.startswith(b"part 0")
    assert first + rest == b"part 0part 1part 2"
    # The first chunk arrives before the function has finished (it pauses 0.3 s per chunk).
    assert first_after < total_after - 0.3


def test_afterburn_head_request_gets_headers_only(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    status, headers, body = watchdog.request("HEAD", "/echo")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(len(b"GET /echo "))
    assert watchdog.request("GET", "/echo")[2] == b"GET /echo "


def test_afterburn_garbage_output_is_502_and_the_process_replaced(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    before = watchdog.request("GET", "/pid")[2]
    status, _, body = watchdog.request("GET", "/garbage")
    assert status == 502
    assert b"not an HTTP response" in body
    assert body.count(b"\n") == 1
    status, _, after = watchdog.request("GET", "/pid")
    assert status == 200 and after != before
    assert watchdog.process.poll() is None


def test_afterburn_unframed_response_is_502_and_the_process_replaced(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    before = watchdog.request("GET", "/pid")[2]
    status, _, body = watchdog.request("GET", "/unframed")
    assert status == 502
    assert b"neither Content-Length nor Transfer-Encoding" in body
    status, _, after = watchdog.request("GET", "/pid")
    assert status == 200 and after != before


def test_afterburn_exec_timeout_is_504_kills_and_starts_a_fresh_process(
    watchdog_factory: Factory,
):
    watchdog = afterburn(watchdog_factory, RAW, exec_timeout="500ms")
    before = int(watchdog.request("GET", "/pid")[2])
    status, _, body = watchdog.request("GET", "/sleep")
    assert status == 504
    assert b"exec_timeout (500ms) exceeded" in body
    status, _, after = watchdog.request("GET", "/echo")
    assert (status, after) == (200, b"GET /echo ")
    assert int(watchdog.request("GET", "/pid")[2]) != before
    time.sleep(0.2)
    assert not Path(f"/proc/{before}").exists()  # the timed-out process group is gone
    assert watchdog.process.poll() is None


def test_afterburn_exec_timeout_counts_the_wait_for_an_idle_process(watchdog_factory: Factory):
    """A request queued behind a hung one gets its 504 within its own exec_timeout, not after
    the hung request's timeout plus a whole exec_timeout of its own."""
    watchdog = afterburn(watchdog_factory, RAW, exec_timeout="2s")
    first = threading.Thread(target=watchdog.request, args=("GET", "/sleep"))
    first.start()
    watchdog.wait_for_log("raw function got GET /sleep")
    began = time.monotonic()
    status, _, body = watchdog.request("GET", "/sleep")
    waited = time.monotonic() - began
    first.join(10)
    assert status == 504
    assert b"exec_timeout (2s) exceeded" in body
    assert waited < 2.8, f"answered after {waited:.1f}s"


def test_afterburn_requests_wait_in_order_and_never_interleave(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    results: dict[int, tuple[int, bytes]] = {}

    def send(index: int) -> None:
        status, _, body = watchdog.request("POST", f"/echo/{index}", b"x" * (index * 1000))
        results[index] = (status, body)

    threads = [threading.Thread(target=send, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for index in range(8):
        assert results[index] == (200, f"POST /echo/{index} ".encode() + b"x" * (index * 1000))


def test_afterburn_max_inflight_still_answers_429(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW, max_inflight="1")
    slow = threading.Thread(target=watchdog.request, args=("GET", "/stream"))
    slow.start()
    time.sleep(0.2)
    status, _, _ = watchdog.request("GET", "/echo")
    slow.join(10)
    assert status == 429


def test_afterburn_process_death_is_502_and_the_watchdog_exits_non_zero(
    watchdog_factory: Factory,
):
    watchdog = afterburn(watchdog_factory, RAW)
    status, _, body = watchdog.request("GET", "/die")
    assert status == 502
    assert b"exit status 3" in body
    assert wait_for_exit(watchdog) == 1
    log = watchdog.log()
    assert "exit status 3" in log
    assert "dying on purpose" in log
    assert not watchdog.lock_path.exists()


def test_afterburn_fprocess_that_cannot_start_stops_the_watchdog(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, "/nonexistent/function", wait=False)
    assert wait_for_exit(watchdog) != 0
    assert "/nonexistent/function" in watchdog.log()


def test_afterburn_kills_its_processes_on_sigterm(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW, afterburn_processes="2")
    pids = set()
    for _ in range(20):
        pids.add(int(watchdog.request("GET", "/pid")[2]))
    assert watchdog.terminate() == 0
    time.sleep(0.2)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


# --- several processes ---------------------------------------------------------------------------


def test_afterburn_processes_serve_requests_side_by_side(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW, afterburn_processes="2")
    pids: list[bytes] = []
    bodies: list[bytes] = []

    def slow() -> None:
        bodies.append(watchdog.request("GET", "/stream")[2])

    began = time.monotonic()
    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    # Both processes are busy for ~0.9 s; a third request waits for one of them.
    pids.append(watchdog.request("GET", "/pid")[2])
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - began
    assert bodies == [b"part 0part 1part 2"] * 2
    # One process would take 1.8 s for the two streams; two take 0.9 s.
    assert elapsed < 1.6
    for _ in range(10):
        pids.append(watchdog.request("GET", "/pid")[2])
    assert len(set(pids)) == 2


def test_afterburn_processes_must_be_a_positive_number(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW, afterburn_processes="0", wait=False)
    assert wait_for_exit(watchdog) != 0
    assert "afterburn_processes: '0' is less than 1" in watchdog.log()


# --- the Python client library ------------------------------------------------------------------

SERVE = python_function("ab_lib_serve.py")
WSGI = python_function("ab_lib_wsgi.py")


def test_serve_turns_return_values_into_responses(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, SERVE)
    status, headers, body = watchdog.request("POST", "/json?a=1&a=2", b"data")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"method": "POST", "query": {"a": ["1", "2"]}, "body": "data"}
    status, headers, body = watchdog.request("GET", "/bytes")
    assert body == bytes(range(256))
    assert headers["Content-Type"] == "application/octet-stream"
    status, headers, body = watchdog.request("POST", "/", b"world")
    assert (status, body) == (200, b"hello world")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    status, headers, body = watchdog.request("GET", "/status")
    assert (status, body, headers["X-Made"], headers["Content-Type"]) == (
        201,
        b"made",
        "yes",
        "text/x",
    )
    assert watchdog.request("GET", "/header", headers={"x-thing": "abc"})[2] == b"abc"


def test_serve_print_goes_to_the_log_not_the_response(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, SERVE)
    assert watchdog.request("POST", "/", b"x")[2] == b"hello x"
    watchdog.wait_for_log("handler saw POST /")


def test_serve_handler_exception_is_500_and_the_loop_goes_on(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, SERVE)
    pid = watchdog.request("GET", "/pid")[2]
    status, _, _ = watchdog.request("GET", "/raise")
    assert status == 500
    watchdog.wait_for_log("the handler failed on purpose")
    assert watchdog.request("GET", "/pid")[2] == pid  # same process, still serving


def test_serve_wsgi_runs_a_flask_app(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, WSGI)
    status, headers, body = watchdog.request("POST", "/echo", b"some bytes")
    assert (status, body, headers["X-Flask"]) == (202, b"some bytes", "yes")
    status, headers, body = watchdog.request("GET", "/hello/ab?q=x")
    assert status == 200 and json.loads(body) == {"hello": "ab", "q": "x"}
    assert headers["Content-Type"] == "application/json"
    status, _, body = watchdog.request("GET", "/stream")
    assert (status, body) == (200, b"line 0\nline 1\nline 2\n")
    assert watchdog.request("GET", "/missing")[0] == 404
    assert watchdog.request("GET", "/boom")[0] == 500
    assert watchdog.request("POST", "/echo", b"still")[2] == b"still"
    watchdog.wait_for_log("flask saw /echo")


# --- functions written for the published clients ------------------------------------------------

NODE = shutil.which("node") or "node"


def test_node_example_answers_through_afterburn(watchdog_factory: Factory):
    example = ROOT / "examples" / "afterburn" / "node" / "index.js"
    watchdog = afterburn(watchdog_factory, f"{NODE} {example}")
    status, headers, body = watchdog.request("POST", "/node?x=1", b"from the test")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"method": "POST", "path": "/node", "body": "from the test"}
    # A bodiless GET still carries `Content-Length: 0` (the client would crash without it),
    # and a chunked body arrives de-chunked with a length.
    assert json.loads(watchdog.request("GET", "/")[2])["body"] == ""
    reply = watchdog.raw(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"2\r\nab\r\n0\r\n\r\n"
    )
    assert reply.endswith(b'"body":"ab"}')


def test_python_example_answers_through_afterburn(watchdog_factory: Factory):
    example = ROOT / "examples" / "afterburn" / "python" / "handler.py"
    watchdog = afterburn(watchdog_factory, f"{PYTHON} {example}", afterburn_processes="2")
    assert watchdog.request("GET", "/?name=ab")[2] == b"Hello, ab!\n"
    status, _, body = watchdog.request("POST", "/", b"12345")
    assert (status, json.loads(body)) == (201, {"received": 5})
    watchdog.wait_for_log("greeting ab")


def test_afterburn_client_leaving_mid_body_gets_a_fresh_process(watchdog_factory: Factory):
    watchdog = afterburn(watchdog_factory, RAW)
    before = watchdog.request("GET", "/pid")[2]
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial")
        time.sleep(0.2)
    # The function got a head promising 100000 bytes: its stream cannot be reused.
    status, _, body = watchdog.request("POST", "/echo", b"next", timeout=3)
    assert (status, body) == (200, b"POST /echo next")
    assert watchdog.request("GET", "/pid")[2] != before


def test_afterburn_client_leaving_mid_answer_keeps_the_process(watchdog_factory: Factory):
    """The whole request reached the function: its answer is read to the end into nothing,
    and the same process serves the next request (no respawn, no error)."""
    watchdog = afterburn(watchdog_factory, RAW)
    before = watchdog.request("GET", "/pid")[2]
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"part 0" in sock.recv(65536)  # the first of three chunks, 0.3 s apart
    status, _, body = watchdog.request("POST", "/echo", b"next", timeout=5)
    assert (status, body) == (200, b"POST /echo next")
    assert watchdog.request("GET", "/pid")[2] == before
    log = watchdog.log()
    assert "in place of" not in log
    assert "GET /stream - 499 - " in log or "GET /stream - 200 - " in log


def test_afterburn_clients_closing_as_soon_as_answered_never_cost_a_respawn(
    watchdog_factory: Factory,
):
    watchdog = afterburn(watchdog_factory, RAW)
    pids = set()
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            pids.add(read_response(sock).body)
    assert len(pids) == 1
    assert "in place of" not in watchdog.log()


def test_afterburn_processes_is_listed_by_help():
    done = subprocess.run(
        [PYTHON, "-m", "fwatchdog", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=10,
    )
    assert "afterburn_processes" in done.stdout + done.stderr
