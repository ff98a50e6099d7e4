"""Static mode, end to end: the real watchdog serving a real directory tree.

Issue 6, item by item: (1) serving, (2) conditional and partial requests, (3) safety, with a
table of hostile paths sent raw over a socket so that no client tidies them first, and
(4) the cache and the large-file path. No function process is configured in any of these.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest
from conftest import ROOT, Watchdog, free_port, start_watchdog, wait_until
from raw_http import Response, ResponseReader, read_response

Factory = Callable[..., Watchdog]
FWATCHDOG = [sys.executable, "-m", "fwatchdog"]

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
SMALL_TEXT = b"hello, static world\n"
MTIME = 1_700_000_000  # a fixed mtime (2023-11-14 22:13:20 UTC) for the files we check dates on
MTIME_HTTP = "Tue, 14 Nov 2023 22:13:20 GMT"
BIG_SIZE = 3 * 1024 * 1024 + 12345  # larger than the in-memory cache's per-file limit


# --- helpers --------------------------------------------------------------------------------------


def raw_get(
    watchdog: Watchdog,
    target: str | bytes,
    headers: dict[str, str] | None = None,
    method: str = "GET",
) -> Response:
    """One request whose target goes on the wire exactly as given."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: static.test"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in (headers or {}).items()]
    lines.append(b"Connection: close")
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        return read_response(sock, head_request=method == "HEAD")


def write_file(path: Path, data: bytes, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def random_bytes(size: int, seed: int = 6) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Site:
    root: Path
    outside: Path
    big: bytes


def build_site(base: Path) -> Site:
    """A public root with files, directories and links, next to a directory it must not leak."""
    root = base / "public"
    outside = base / "outside"
    write_file(outside / "secret.txt", SECRET)
    write_file(base / "secret.txt", SECRET)  # the root's own parent
    write_file(root / "hello.txt", SMALL_TEXT, MTIME)
    big = random_bytes(BIG_SIZE)
    write_file(root / "big.bin", big, MTIME)
    write_file(root / "index-dir" / "index.html", b"<h1>index</h1>\n")
    write_file(root / "index-dir" / "other.txt", b"other\n")
    listing = root / "listing"
    write_file(listing / "b&<c>.txt", b"x")
    write_file(listing / "a file.txt", b"a")
    write_file(listing / "Zeta.txt", b"z")
    write_file(listing / 'q"uote.txt', b"q")
    write_file(listing / "javascript:alert(1)", b"j")
    (listing / "sub dir").mkdir()
    write_file(listing / ".hidden", b"hidden")
    os.symlink(outside / "secret.txt", listing / "leak-link")
    os.symlink(root / "hello.txt", listing / "inside-link")
    write_file(root / ".env", b"PASSWORD=" + SECRET)
    write_file(root / ".git" / "config", b"[core]\n" + SECRET)
    write_file(root / "sub" / ".hidden", SECRET)
    write_file(root / "sub" / "page.txt", b"page\n")
    os.symlink(outside, root / "link-out")  # a directory link leading outside
    os.symlink(outside / "secret.txt", root / "link-out-file")
    os.symlink(root / "link-out-file", root / "link-chain")  # inside link to an outside link
    os.symlink("/etc", root / "etc-link")
    os.symlink(root / "hello.txt", root / "link-in.txt")
    os.symlink(root / "sub", root / "link-in-dir")
    os.symlink(root / ".env", root / "env-link")  # a dot-file behind an innocent name
    write_file(root / "%2e%2e" / "decoy.txt", b"a directory literally named %2e%2e\n")
    write_file(root / "caf\u00e9 menu.txt", b"utf-8 name\n")
    for name, data in {
        "page.html": b"<p>html</p>",
        "style.css": b"body{}",
        "app.js": b"let a;",
        "data.json": b"{}",
        "image.svg": b"<svg/>",
        "pixel.png": b"\x89PNG\r\n\x1a\n",
        "module.wasm": b"\x00asm",
        "UPPER.TXT": b"upper",
        "notes": b"plain text without an extension\n",
        "blob": b"\x00\x01\x02binary",
        "empty": b"",
    }.items():
        write_file(root / "types" / name, data)
    return Site(root, outside, big)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return build_site(tmp_path_factory.mktemp("static-site"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[Watchdog]:
    """One watchdog for the tests that only read the shared site."""
    watchdog = start_watchdog(
        tmp_path_factory.mktemp("static-wd"), mode="static", static_path=str(site.root)
    )
    yield watchdog
    if watchdog.process.poll() is None:
        watchdog.process.kill()
        watchdog.process.wait(10)


def multipart_parts(reply: Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/byteranges body, checked to be framed exactly."""
    match = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", reply.headers["content-type"])
    assert match, reply.headers["content-type"]
    delimiter = b"--" + match.group(1).encode()
    body = reply.body
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n")
    pieces = body[: -len(delimiter) - 6].split(b"\r\n" + delimiter + b"\r\n")
    assert pieces[0].startswith(delimiter + b"\r\n")
    pieces[0] = pieces[0][len(delimiter) + 2 :]
    parts = []
    for piece in pieces:
        head, _, data = piece.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


# --- 1. serving -----------------------------------------------------------------------------------


def test_static_serves_small_file_byte_exact_with_length_type_and_date(served: Watchdog) -> None:
    reply = raw_get(served, "/hello.txt")
    assert reply.status == 200
    assert reply.body == SMALL_TEXT
    assert reply.headers["content-length"] == str(len(SMALL_TEXT))
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["last-modified"] == MTIME_HTTP
    assert reply.headers["accept-ranges"] == "bytes"


def test_static_serves_large_file_byte_exact(served: Watchdog, site: Site) -> None:
    reply = raw_get(served, "/big.bin")
    assert reply.status == 200
    assert reply.headers["content-length"] == str(BIG_SIZE)
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.body == site.big


def test_static_serves_the_same_bytes_on_a_kept_alive_connection(
    served: Watchdog, site: Site
) -> None:
    conn = served.connection(timeout=10)
    try:
        for _ in range(3):
            for path, expected in (("/hello.txt", SMALL_TEXT), ("/big.bin", site.big)):
                conn.request("GET", path)
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, expected)
    finally:
        conn.close()


def test_static_pipelined_requests_mixing_cached_and_uncached_answers_keep_their_order(
    served: Watchdog, site: Site
) -> None:
    """Cached files and probes are answered inside the read that brought them, the rest by a
    task: sent in one write, the answers must still come back in order, whole."""
    raw_get(served, "/hello.txt")  # now in the cache
    order = ["/hello.txt", "/big.bin", "/_/health", "/hello.txt", "/nothing-here", "/hello.txt"]
    batch = b"".join(f"GET {path} HTTP/1.1\r\nHost: static.test\r\n\r\n".encode() for path in order)
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(batch)
        reader = ResponseReader(sock)
        replies = [reader.read_response(more=True) for _ in order]
        assert reader.buffer == b"", "bytes after the last answer"
    assert [reply.status for reply in replies] == [200, 200, 200, 200, 404, 200]
    assert [replies[i].body for i in (0, 3, 5)] == [SMALL_TEXT] * 3
    assert replies[1].body == site.big
    assert replies[2].body == b"OK"


def test_static_request_pipelined_behind_a_closing_response_is_neither_answered_nor_logged(
    served: Watchdog,
) -> None:
    raw_get(served, "/hello.txt?warm")  # now in the cache: both would be answered at once
    batch = b"GET /hello.txt?first HTTP/1.0\r\n\r\nGET /hello.txt?second HTTP/1.0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(batch)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 1
    served.wait_for_log("GET /hello.txt?first - 200")
    raw_get(served, "/hello.txt?after")
    log = served.wait_for_log("GET /hello.txt?after - 200")
    assert "?second" not in log


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("page.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("app.js", "text/javascript; charset=utf-8"),
        ("data.json", "application/json"),
        ("image.svg", "image/svg+xml"),
        ("pixel.png", "image/png"),
        ("module.wasm", "application/wasm"),
        ("UPPER.TXT", "text/plain; charset=utf-8"),
        ("notes", "text/plain; charset=utf-8"),  # no extension: sniffed as text
        ("blob", "application/octet-stream"),  # no extension: sniffed as binary
        ("empty", "text/plain; charset=utf-8"),  # as Go says for an empty file
    ],
)
def test_static_content_type_follows_the_extension(
    served: Watchdog, name: str, content_type: str
) -> None:
    reply = raw_get(served, f"/types/{name}")
    assert reply.status == 200
    assert reply.headers["content-type"] == content_type


def test_static_directory_serves_its_index_html(served: Watchdog) -> None:
    reply = raw_get(served, "/index-dir/")
    assert reply.status == 200
    assert reply.body == b"<h1>index</h1>\n"
    assert reply.headers["content-type"] == "text/html; charset=utf-8"


def test_static_root_serves_a_listing_or_index(served: Watchdog) -> None:
    reply = raw_get(served, "/")
    assert reply.status == 200
    assert b'<a href="hello.txt">hello.txt</a>' in reply.body


def test_static_directory_without_slash_redirects_301_keeping_the_query(
    served: Watchdog,
) -> None:
    reply = raw_get(served, "/index-dir?x=1&y=2")
    assert reply.status == 301
    assert reply.headers["location"] == "/index-dir/?x=1&y=2"


def test_static_redirect_never_points_to_another_host(served: Watchdog) -> None:
    reply = raw_get(served, "//index-dir")
    assert reply.status == 301
    assert reply.headers["location"] == "/index-dir/"


def test_static_index_html_by_name_redirects_to_its_directory(served: Watchdog) -> None:
    reply = raw_get(served, "/index-dir/index.html")
    assert reply.status == 301
    assert reply.headers["location"] == "/index-dir/"


def test_static_file_with_trailing_slash_redirects_to_the_file(served: Watchdog) -> None:
    reply = raw_get(served, "/hello.txt/")
    assert reply.status == 301
    assert reply.headers["location"] == "/hello.txt"


def test_static_listing_is_sorted_escaped_relative_and_hides_what_is_not_served(
    served: Watchdog,
) -> None:
    reply = raw_get(served, "/listing/")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.body == (
        b'<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n'
        b'<a href="Zeta.txt">Zeta.txt</a>\n'
        b'<a href="a%20file.txt">a file.txt</a>\n'
        b'<a href="b%26%3Cc%3E.txt">b&amp;&lt;c&gt;.txt</a>\n'
        b'<a href="inside-link">inside-link</a>\n'
        b'<a href="javascript%3Aalert%281%29">javascript:alert(1)</a>\n'
        b'<a href="q%22uote.txt">q&quot;uote.txt</a>\n'
        b'<a href="sub%20dir/">sub dir/</a>\n'
        b"</pre>\n"
    )


def test_static_listing_links_lead_to_the_files(served: Watchdog) -> None:
    listing = raw_get(served, "/listing/").body.decode()
    for href in re.findall(r'href="([^"]+)"', listing):
        reply = raw_get(served, "/listing/" + href)
        assert reply.status == 200, href


def test_static_percent_encoded_utf8_name_is_served(served: Watchdog) -> None:
    reply = raw_get(served, "/caf%C3%A9%20menu.txt")
    assert (reply.status, reply.body) == (200, b"utf-8 name\n")


def test_static_missing_file_is_404(served: Watchdog) -> None:
    reply = raw_get(served, "/no/such/file.txt")
    assert reply.status == 404
    assert reply.body == b"404 page not found\n"


# Drops CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from the bounding set
# (prctl PR_CAPBSET_DROP, 24), then execs the rest of its arguments, which start without them.
_DROP_FILE_PERMISSION_BYPASS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):
    if libc.prctl(24, capability, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_CAPBSET_DROP, {capability}): {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[1], sys.argv[1:])
"""


def without_permission_bypass() -> tuple[str, ...]:
    """Root reads any file: as root, the watchdog runs without the capabilities that let it,
    so that file permissions apply to it as to any other user."""
    if os.geteuid() != 0:
        return ()
    return (sys.executable, "-c", _DROP_FILE_PERMISSION_BYPASS)


def test_static_unreadable_file_is_403_as_go_and_an_unreadable_index_is_passed_over(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "site"
    (root / "dir").mkdir(parents=True)
    (root / "locked.txt").write_text("secret\n")
    (root / "dir" / "index.html").write_text("<p>secret index</p>\n")
    (root / "dir" / "other.txt").write_text("listed\n")
    (root / "locked.txt").chmod(0)
    (root / "dir" / "index.html").chmod(0)
    watchdog = watchdog_factory(
        mode="static", static_path=str(root), command_prefix=without_permission_bypass()
    )
    locked = raw_get(watchdog, "/locked.txt")
    assert (locked.status, locked.body) == (403, b"403 Forbidden\n")
    listing = raw_get(watchdog, "/dir/")  # Go lists the directory when index.html fails
    assert listing.status == 200
    assert b"other.txt" in listing.body and b"secret" not in listing.body
    assert raw_get(watchdog, "/missing.txt").status == 404


def test_static_head_sends_the_headers_of_get_and_no_body(served: Watchdog) -> None:
    for path in ("/hello.txt", "/big.bin", "/listing/"):
        get = raw_get(served, path)
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reader = ResponseReader(sock)
            head_reply = reader.read_response(head_request=True)
            assert reader.closed_by_server(), "bytes after the head of a HEAD answer"
        assert head_reply.status == 200
        for name in ("content-length", "content-type", "last-modified", "etag"):
            assert head_reply.headers.get(name) == get.headers.get(name), (path, name)


def test_static_head_keeps_the_connection_for_the_next_request(served: Watchdog) -> None:
    conn = served.connection(timeout=5)
    local_ports = set()
    try:
        for method in ("HEAD", "GET", "HEAD", "GET"):
            for path, expected in (("/hello.txt", SMALL_TEXT), ("/big.bin", None)):
                conn.request(method, path)
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200
                assert response.getheader("Connection") is None
                if method == "HEAD":
                    assert body == b""
                elif expected is not None:
                    assert body == expected
                assert conn.sock is not None  # not closed after the response
                local_ports.add(conn.sock.getsockname()[1])
        assert len(local_ports) == 1  # one connection carried all eight
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_static_other_methods_get_405_with_allow(served: Watchdog, method: str) -> None:
    status, headers, body = served.request(method, "/hello.txt", body=b"data")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert SMALL_TEXT not in body


def test_static_requests_are_logged_once_with_status_and_size(served: Watchdog) -> None:
    raw_get(served, "/types/data.json?logged=1")
    served.wait_for_log("GET /types/data.json?logged=1 - 200 - ContentLength: 2")


# --- 2. conditional and partial requests ----------------------------------------------------------


def test_static_etag_is_strong_and_changes_with_the_file(watchdog_factory: Factory, tmp_path: Path):
    root = tmp_path / "root"
    path = write_file(root / "f.txt", b"one", MTIME)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    first = raw_get(watchdog, "/f.txt").headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', first)
    assert raw_get(watchdog, "/f.txt").headers["etag"] == first
    write_file(path, b"two", MTIME + 1)
    second = raw_get(watchdog, "/f.txt")
    assert second.body == b"two"
    assert second.headers["etag"] != first


def test_static_if_none_match_with_the_etag_is_304(served: Watchdog) -> None:
    etag = raw_get(served, "/hello.txt").headers["etag"]
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        reply = raw_get(served, "/hello.txt", {"If-None-Match": header})
        assert reply.status == 304, header
        assert reply.body == b""
        assert reply.headers["etag"] == etag
        assert "content-length" not in reply.headers


def test_static_if_none_match_with_another_etag_is_200(served: Watchdog) -> None:
    reply = raw_get(served, "/hello.txt", {"If-None-Match": '"not-it"'})
    assert (reply.status, reply.body) == (200, SMALL_TEXT)


def test_static_if_none_match_wins_over_if_modified_since(served: Watchdog) -> None:
    reply = raw_get(
        served, "/hello.txt", {"If-None-Match": '"not-it"', "If-Modified-Since": MTIME_HTTP}
    )
    assert reply.status == 200


def test_static_if_modified_since_not_modified_is_304(served: Watchdog) -> None:
    later = time.gmtime(MTIME + 3600)
    rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", later)
    asctime = time.asctime(later)  # no zone: UTC, as Go's http.ParseTime reads it
    for date in (MTIME_HTTP, formatdate(MTIME + 3600, usegmt=True), rfc850, asctime):
        reply = raw_get(served, "/hello.txt", {"If-Modified-Since": date})
        assert reply.status == 304, date
        assert reply.body == b""
        # As Go's: the validators, no description of a body (the file is cached by now).
        assert reply.headers["etag"] and reply.headers["last-modified"] == MTIME_HTTP
        assert "content-type" not in reply.headers and "content-length" not in reply.headers


def test_static_if_modified_since_before_the_change_is_200(served: Watchdog) -> None:
    for date in (formatdate(MTIME - 1, usegmt=True), "not a date"):
        reply = raw_get(served, "/hello.txt", {"If-Modified-Since": date})
        assert (reply.status, reply.body) == (200, SMALL_TEXT), date


def test_static_if_modified_since_applies_to_large_files_and_listings(served: Watchdog) -> None:
    assert raw_get(served, "/big.bin", {"If-Modified-Since": MTIME_HTTP}).status == 304
    listing_date = raw_get(served, "/listing/").headers["last-modified"]
    assert raw_get(served, "/listing/", {"If-Modified-Since": listing_date}).status == 304


def test_static_if_match_and_if_unmodified_since_failing_are_412(served: Watchdog) -> None:
    assert raw_get(served, "/hello.txt", {"If-Match": '"not-it"'}).status == 412
    earlier = formatdate(MTIME - 60, usegmt=True)
    assert raw_get(served, "/hello.txt", {"If-Unmodified-Since": earlier}).status == 412
    etag = raw_get(served, "/hello.txt").headers["etag"]
    assert raw_get(served, "/hello.txt", {"If-Match": etag}).status == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=2-5", 2, 5),  # one closed range
        ("bytes=-4", None, None),  # suffix: the last 4 bytes
        ("bytes=7-", 7, None),  # open: from 7 to the end
        ("bytes=3-99999999", 3, None),  # an end past the file is the end
        ("bytes=0-0", 0, 0),
        ("BYTES = 1-2", 1, 2),  # unit in any case, spaces allowed
    ],
)
@pytest.mark.parametrize("path", ["/hello.txt", "/big.bin"])
def test_static_single_range_is_206_with_content_range(
    served: Watchdog, site: Site, path: str, header: str, start: int | None, end: int | None
) -> None:
    content = SMALL_TEXT if path == "/hello.txt" else site.big
    size = len(content)
    if header == "bytes=-4":
        start, end = size - 4, size - 1
    if end is None:
        end = size - 1
    assert start is not None
    reply = raw_get(served, path, {"Range": header})
    assert reply.status == 206
    assert reply.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert reply.headers["content-length"] == str(end - start + 1)
    assert reply.body == content[start : end + 1]


@pytest.mark.parametrize("path", ["/hello.txt", "/big.bin"])
def test_static_several_ranges_are_multipart_byteranges(
    served: Watchdog, site: Site, path: str
) -> None:
    content = SMALL_TEXT if path == "/hello.txt" else site.big
    size = len(content)
    reply = raw_get(served, path, {"Range": "bytes=0-1, 5-8,-3"})
    assert reply.status == 206
    assert int(reply.headers["content-length"]) == len(reply.body)
    parts = multipart_parts(reply)
    expected = [(0, 1), (5, 8), (size - 3, size - 1)]
    assert len(parts) == len(expected)
    part_type = "text/plain; charset=utf-8" if path == "/hello.txt" else "application/octet-stream"
    for (headers, data), (start, end) in zip(parts, expected, strict=True):
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert headers["content-type"] == part_type
        assert data == content[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=100-200", "bytes=21-", "bytes=-0", "bytes=50-,60-70"])
def test_static_unsatisfiable_range_is_416_with_the_size(served: Watchdog, header: str) -> None:
    reply = raw_get(served, "/hello.txt", {"Range": header})
    assert reply.status == 416
    assert reply.headers["content-range"] == f"bytes */{len(SMALL_TEXT)}"
    assert SMALL_TEXT not in reply.body


@pytest.mark.parametrize(
    "header",
    [
        "bytes=5-2",  # backwards
        "items=0-1",  # another unit
        "bytes=a-b",  # not numbers
        "bytes=0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-19",
    ],
)
def test_static_range_we_do_not_honour_sends_the_whole_file(served: Watchdog, header: str) -> None:
    reply = raw_get(served, "/hello.txt", {"Range": header})
    assert (reply.status, reply.body) == (200, SMALL_TEXT)


def test_static_if_range_matching_gives_206_and_stale_gives_200(served: Watchdog) -> None:
    etag = raw_get(served, "/hello.txt").headers["etag"]
    partial = raw_get(served, "/hello.txt", {"Range": "bytes=0-4", "If-Range": etag})
    assert (partial.status, partial.body) == (206, SMALL_TEXT[:5])
    by_date = raw_get(served, "/hello.txt", {"Range": "bytes=0-4", "If-Range": MTIME_HTTP})
    assert by_date.status == 206
    for stale in ('"stale"', f"W/{etag}", formatdate(MTIME - 5, usegmt=True)):
        reply = raw_get(served, "/hello.txt", {"Range": "bytes=0-4", "If-Range": stale})
        assert (reply.status, reply.body) == (200, SMALL_TEXT), stale


def test_static_range_on_head_gives_206_headers_without_body(served: Watchdog) -> None:
    reply = raw_get(served, "/big.bin", {"Range": "bytes=10-19"}, method="HEAD")
    assert reply.status == 206
    assert reply.headers["content-range"] == f"bytes 10-19/{BIG_SIZE}"
    assert reply.headers["content-length"] == "10"


# --- 3. safety ------------------------------------------------------------------------------------

# (raw request-target, why it is hostile). Every one must answer 404 and show nothing of what
# lies outside the root; a raw NUL never reaches the mode (the HTTP parser answers 400).
HOSTILE_TARGETS: list[tuple[bytes, str]] = [
    (b"/hello.txt\x00.html", "raw NUL"),
    (b"/../secret.txt", "plain dot-dot"),
    (b"/../../../../../../etc/passwd", "dot-dot to the file system root"),
    (b"/../outside/secret.txt", "dot-dot into a sibling directory"),
    (b"/sub/../../secret.txt", "dot-dot after a real directory"),
    (b"/%2e%2e/secret.txt", "encoded dots"),
    (b"/%2E%2E/secret.txt", "encoded dots, upper-case hex"),
    (b"/.%2e/secret.txt", "half-encoded dots"),
    (b"/%2e./secret.txt", "half-encoded dots, the other half"),
    (b"/..%2fsecret.txt", "encoded slash"),
    (b"/..%2Fsecret.txt", "encoded slash, upper-case hex"),
    (b"/%2e%2e%2fsecret.txt", "dots and slash encoded"),
    (b"/sub/%2e%2e/%2e%2e/secret.txt", "encoded dots after a real directory"),
    (b"/%252e%252e/secret.txt", "double-encoded dots"),
    (b"/%252e%252e%252fsecret.txt", "double-encoded dots and slash"),
    (b"/..%255csecret.txt", "double-encoded backslash"),
    (b"/..\\secret.txt", "backslash"),
    (b"/..%5csecret.txt", "encoded backslash"),
    (b"/%5c..%5csecret.txt", "encoded backslashes around dots"),
    (b"/hello.txt%00.html", "encoded NUL"),
    (b"/%00../secret.txt", "encoded NUL before dots"),
    (b"/%c0%ae%c0%ae/secret.txt", "overlong UTF-8 dots"),
    (b"/..;/secret.txt", "dot-dot with a parameter"),
    (b"//../secret.txt", "empty segment before dot-dot"),
    (b"/./../secret.txt", "dot before dot-dot"),
    (b"/..", "bare dot-dot"),
    (b"/%2e%2e", "bare encoded dot-dot"),
    (b"/sub/..%00/secret.txt", "dot-dot with a NUL"),
    (b"/hello.txt%zz", "malformed escape"),
    (b"http://static.test/../secret.txt", "absolute-form target with dot-dot"),
    (b"/link-out/secret.txt", "directory link leading outside"),
    (b"/link-out/", "listing through a directory link leading outside"),
    (b"/link-out-file", "file link leading outside"),
    (b"/link-chain", "inside link to an outside link"),
    (b"/etc-link/passwd", "link to /etc"),
    (b"/listing/leak-link", "outside link inside a listed directory"),
    (b"/.env", "dot-file"),
    (b"/%2eenv", "dot-file, encoded dot"),
    (b"/.git/config", "dot-directory"),
    (b"/sub/.hidden", "dot-file in a subdirectory"),
    (b"/env-link", "link to a dot-file"),
    (b"*", "asterisk-form"),
]


@pytest.mark.parametrize(("target", "why"), HOSTILE_TARGETS, ids=[w for _, w in HOSTILE_TARGETS])
def test_static_hostile_path_reveals_nothing(served: Watchdog, target: bytes, why: str) -> None:
    reply = raw_get(served, target)
    assert reply.status == (400 if b"\x00" in target else 404), why
    assert SECRET not in reply.body
    assert b"root:" not in reply.body
    assert "location" not in reply.headers


def test_static_traversal_table_is_at_least_twenty_paths() -> None:
    assert len(HOSTILE_TARGETS) >= 20


def test_static_double_encoded_dots_are_a_literal_name(served: Watchdog) -> None:
    """`%252e%252e` decodes once, to a directory really named `%2e%2e` inside the root."""
    reply = raw_get(served, "/%252e%252e/decoy.txt")
    assert (reply.status, reply.body) == (200, b"a directory literally named %2e%2e\n")


def test_static_links_inside_the_root_are_followed(served: Watchdog) -> None:
    assert raw_get(served, "/link-in.txt").body == SMALL_TEXT
    assert raw_get(served, "/link-in-dir/page.txt").body == b"page\n"
    assert raw_get(served, "/listing/inside-link").body == SMALL_TEXT


def test_static_link_repointed_outside_after_being_served_is_refused(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / "real.txt", b"inside\n")
    write_file(tmp_path / "secret.txt", SECRET)
    os.symlink(root / "real.txt", root / "moving")
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    assert raw_get(watchdog, "/moving").body == b"inside\n"  # now in the cache
    os.unlink(root / "moving")
    os.symlink(tmp_path / "secret.txt", root / "moving")
    reply = raw_get(watchdog, "/moving")
    assert reply.status == 404
    assert SECRET not in reply.body


def test_static_dotfiles_are_served_and_listed_with_static_dotfiles_true(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / ".well-known" / "security.txt", b"Contact: me\n")
    write_file(root / ".env", b"A=1\n")
    write_file(tmp_path / "outside.txt", SECRET)
    os.symlink(tmp_path, root / ".up")  # a dot-named link leading outside: still refused
    watchdog = watchdog_factory(mode="static", static_path=str(root), static_dotfiles="true")
    assert raw_get(watchdog, "/.well-known/security.txt").body == b"Contact: me\n"
    assert raw_get(watchdog, "/.env").body == b"A=1\n"
    listing = raw_get(watchdog, "/").body
    assert b'<a href=".env">.env</a>' in listing
    assert b".up" not in listing
    assert raw_get(watchdog, "/.up/outside.txt").status == 404
    assert raw_get(watchdog, "/.up/root/.env").body == b"A=1\n"  # back inside: fine
    assert raw_get(watchdog, "/../root/.env").status == 404


def _exit_of(watchdog: Watchdog) -> tuple[int, str]:
    code = watchdog.process.wait(10)
    return code, watchdog.log()


def test_static_missing_static_path_stops_start_naming_it(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir"
    code, log = _exit_of(watchdog_factory(wait=False, mode="static", static_path=str(missing)))
    assert code != 0
    assert f"static_path: '{missing}' does not exist" in log
    assert "Traceback" not in log


def test_static_static_path_that_is_a_file_stops_start_naming_it(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    path = write_file(tmp_path / "file.txt", b"x")
    code, log = _exit_of(watchdog_factory(wait=False, mode="static", static_path=str(path)))
    assert code != 0
    assert f"static_path: '{path}' is not a directory" in log


def test_static_unreadable_static_path_stops_start_naming_it(tmp_path: Path) -> None:
    """Run without the capabilities that let root read anything, so permissions apply."""
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("fprocess", "mode")},
        "mode": "static",
        "static_path": str(root),
        "port": str(free_port()),
        "metrics_port": str(free_port()),
        "TMPDIR": str(tmp_path),
        "PYTHONPATH": str(ROOT / "src"),
    }
    drop = "-dac_override,-dac_read_search"
    try:
        completed = subprocess.run(
            ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", *FWATCHDOG],
            env=env,
            capture_output=True,
            timeout=20,
            check=False,
        )
    finally:
        root.chmod(0o755)
    output = completed.stdout.decode() + completed.stderr.decode()
    assert completed.returncode != 0
    assert f"static_path: '{root}' cannot be read: Permission denied" in output


def test_static_mode_needs_no_fprocess(served: Watchdog) -> None:
    assert "fprocess" not in served.env and "function_process" not in served.env
    assert raw_get(served, "/hello.txt").status == 200


# --- 4. cache and large files ---------------------------------------------------------------------


def test_static_cached_file_rewritten_in_place_is_served_new(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    path = write_file(root / "app.js", b"version = 1;", MTIME)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    assert raw_get(watchdog, "/app.js").body == b"version = 1;"
    write_file(path, b"version = 2;", MTIME + 10)  # same size, new mtime
    assert raw_get(watchdog, "/app.js").body == b"version = 2;"
    write_file(path, b"version = 33;", MTIME + 10)  # same mtime, new size
    assert raw_get(watchdog, "/app.js").body == b"version = 33;"


def test_static_cached_file_replaced_or_removed_is_seen(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / "v1" / "app.css", b"a{}")
    write_file(root / "v2" / "app.css", b"b{}")
    os.symlink("v1", root / "current")
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    assert raw_get(watchdog, "/current/app.css").body == b"a{}"
    os.symlink("v2", root / "next")
    os.replace(root / "next", root / "current")  # an atomic deploy
    assert raw_get(watchdog, "/current/app.css").body == b"b{}"
    shutil.rmtree(root / "v2")
    assert raw_get(watchdog, "/current/app.css").status == 404


def kept_alive_get(sock: socket.socket, target: bytes) -> Response:
    sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: static.test\r\n\r\n")
    return read_response(sock)


def test_static_large_file_rewritten_is_served_new_on_a_kept_alive_connection(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """The second request for a large file goes out by sendfile from its cached head; a
    change to the file is seen all the same."""
    root = tmp_path / "root"
    first, second = random_bytes(BIG_SIZE, seed=1), random_bytes(BIG_SIZE + 7, seed=2)
    path = write_file(root / "big.bin", first)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        for _ in range(3):
            assert kept_alive_get(sock, b"/big.bin").body == first
        write_file(path, second)
        reply = kept_alive_get(sock, b"/big.bin")
        assert (reply.headers["content-length"], reply.body) == (str(len(second)), second)
        assert kept_alive_get(sock, b"/big.bin").body == second


def test_static_the_same_request_again_gets_the_same_answer_until_the_file_changes(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """A request repeated byte for byte (a cached file) gets the same bytes, a fresh Date and
    a log line each, on any connection; a change to the file is seen at once."""
    root = tmp_path / "root"
    path = write_file(root / "app.js", b"version = 1;", MTIME)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        replies = [kept_alive_get(sock, b"/app.js?v=1") for _ in range(3)]
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        replies.append(kept_alive_get(sock, b"/app.js?v=1"))
        sock.sendall(b"HEAD /app.js?v=1 HTTP/1.1\r\nHost: static.test\r\n\r\n")
        sock.sendall(b"HEAD /app.js?v=1 HTTP/1.1\r\nHost: static.test\r\n\r\n")
        time.sleep(0.1)  # both answers wait in the socket: one recv may return both
        reader = ResponseReader(sock)
        first_head = reader.read_response(head_request=True, more=True)
        second_head = reader.read_response(head_request=True)
        heads = [first_head, second_head]
        write_file(path, b"version = 22;", MTIME + 10)
        changed = kept_alive_get(sock, b"/app.js?v=1")
    for reply in replies:
        assert (reply.status, reply.body) == (200, b"version = 1;")
        no_date = re.sub(rb"\r\nDate: [^\r]*", b"", reply.raw_head)
        assert no_date == re.sub(rb"\r\nDate: [^\r]*", b"", replies[0].raw_head)
        assert "date" in reply.headers
    for head in heads:
        assert (head.status, head.headers["content-length"], head.body) == (200, "12", b"")
    assert (changed.status, changed.body) == (200, b"version = 22;")
    log = watchdog.wait_for_log("GET /app.js?v=1 - 200 - ContentLength: 13B")
    assert log.count("GET /app.js?v=1 - 200 - ContentLength: 12B") == 4
    assert log.count("HEAD /app.js?v=1 - 200 - ContentLength: 0B") == 2


def test_static_a_change_is_seen_when_the_request_is_read_before_its_inotify_event(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """A request sent after a change, read in the same loop iteration as the change's inotify
    event and ahead of it (epoll's order), is answered with the new file. The watchdog is
    stopped meanwhile, as a loaded machine deschedules it: the pipelined request sent before
    the change puts the socket first on epoll's ready list, the inotify descriptor next."""
    root = tmp_path / "root"
    path = write_file(root / "app.js", b"version = 0;", MTIME)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    request = b"GET /app.js HTTP/1.1\r\nHost: static.test\r\n\r\n"
    answers = []
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        for version in range(1, 4):
            for _ in range(2):  # cached, then trusted on inotify's word
                kept_alive_get(sock, b"/app.js")
            time.sleep(0.05)  # back in epoll_wait
            watchdog.process.send_signal(signal.SIGSTOP)
            try:
                sock.sendall(request)  # sent before the change: either version is right
                write_file(path, b"version = %d;" % version, MTIME + 10 * version)
                sock.sendall(request)  # sent after it
            finally:
                watchdog.process.send_signal(signal.SIGCONT)
            reader = ResponseReader(sock)
            reader.read_response(more=True)
            after = reader.read_response()
            answers.append(after.body)
    assert answers == [b"version = 1;", b"version = 2;", b"version = 3;"]


HUGE = 32 * 1024 * 1024


@contextlib.contextmanager
def huge_file_served_once(watchdog: Watchdog) -> Iterator[socket.socket]:
    """A kept-alive connection on which /huge.bin was fetched whole once (its head is now
    cached), with a small receive buffer: the next fetch goes out by sendfile without a task,
    at the pace this client takes it."""
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        assert len(kept_alive_get(sock, b"/huge.bin").body) == HUGE
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        yield sock


def test_static_client_leaving_mid_file_is_logged_with_what_it_got_and_nothing_stays(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / "huge.bin", random_bytes(HUGE))
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    with huge_file_served_once(watchdog) as sock:
        sock.sendall(b"GET /huge.bin?second HTTP/1.1\r\nHost: static.test\r\n\r\n")
        sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: static.test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    log = watchdog.wait_for_log("GET /huge.bin?second - 200 - ContentLength: ")
    partial = re.search(r"GET /huge\.bin\?second - 200 - ContentLength: (\S+) ", log)
    assert partial is not None and partial[1] != "33.55MB", log
    assert wait_until(lambda: "http_requests_in_flight 0.0" in watchdog.metrics().splitlines())
    assert raw_get(watchdog, "/huge.bin", method="HEAD").status == 200


def test_static_large_file_to_a_client_that_stops_reading_is_cut_off_at_write_timeout(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / "huge.bin", random_bytes(HUGE))
    watchdog = watchdog_factory(mode="static", static_path=str(root), write_timeout="1s")
    with huge_file_served_once(watchdog) as sock:
        sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: static.test\r\n\r\n")
        began = time.monotonic()
        time.sleep(2)  # not reading: the watchdog must give up at write_timeout
        received = 0
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
        assert received < HUGE
        assert time.monotonic() - began < 8
    assert raw_get(watchdog, "/huge.bin", method="HEAD").status == 200


def test_static_index_added_to_a_listed_directory_is_served(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    write_file(root / "d" / "a.txt", b"a")
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    assert b"a.txt" in raw_get(watchdog, "/d/").body
    write_file(root / "d" / "index.html", b"<p>now an index</p>")
    assert raw_get(watchdog, "/d/").body == b"<p>now an index</p>"


def test_static_large_file_to_a_slow_client_keeps_memory_flat(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """The body is read as the client takes it, not loaded: 64 MiB never sits in memory."""
    size = 64 * 1024 * 1024
    root = tmp_path / "root"
    block = random_bytes(1 << 20, seed=7)
    root.mkdir()
    with open(root / "huge.bin", "wb") as out:
        for _ in range(size >> 20):
            out.write(block)
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    raw_get(watchdog, "/types-warmup-404")
    before = watchdog.vmhwm_kib()
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = sock.recv(65536)
        time.sleep(0.5)  # the client stalls; the watchdog must wait, not buffer the file
        stalled_peak = watchdog.vmhwm_kib()
        head, _, body_start = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        count = len(body_start)
        position = 0
        mismatch = None
        data = body_start
        while True:
            for offset in range(0, len(data), 1 << 16):
                piece = data[offset : offset + (1 << 16)]
                start = position % len(block)
                expected = (block + block)[start : start + len(piece)]
                if mismatch is None and piece != expected:
                    mismatch = position
                position += len(piece)
            data = sock.recv(1 << 20)
            if not data:
                break
            count += len(data)
    assert count == size
    assert mismatch is None
    assert stalled_peak - before < 16 * 1024, f"grew {stalled_peak - before} KiB while stalled"


def test_static_file_shrinking_during_a_download_ends_the_connection(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    """A promised Content-Length that can no longer be met must not look like a whole body."""
    root = tmp_path / "root"
    path = write_file(root / "shrinks.bin", random_bytes(16 * 1024 * 1024, seed=9))
    watchdog = watchdog_factory(mode="static", static_path=str(root))
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"GET /shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        received = sock.recv(65536)
        time.sleep(0.3)
        os.truncate(path, 1024 * 1024)
        while chunk := sock.recv(1 << 20):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"Content-Length: 16777216" in head
    assert len(body) < 16 * 1024 * 1024  # cut short, and the connection closed (recv -> b"")


def test_static_listing_dates_follow_http_date_format(served: Watchdog) -> None:
    date = raw_get(served, "/listing/").headers["last-modified"]
    assert parsedate_to_datetime(date).tzinfo is not None
