"""multipart=true, end to end: forms decoded before the function starts, files on disk.

Forms are built by hand, byte for byte, and posted to the real watchdog, which forks
`form_report.py`: it prints the Http_Form_* variables it got, the files it found in
$Http_Form_Dir (size and SHA-256) and how many bytes stdin held.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import Watchdog, function, http_mode_settings, wait_until
from raw_http import read_response

Factory = Callable[..., Watchdog]

BOUNDARY = b"----fwatchdogBoundary7MA4YWxkTrZu0gW"
FORM_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()
REPORT = f"{sys.executable} {function('form_report.py')}"
MODES = ["serializing", "streaming"]
VARIANTS = [("serializing", "true"), ("streaming", "true"), ("streaming", "stream")]


# --- helpers --------------------------------------------------------------------------------------


def text_part(name: bytes, value: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value


def file_part(
    name: bytes, filename: bytes, data: bytes, content_type: bytes = b"application/octet-stream"
) -> bytes:
    return (
        b'Content-Disposition: form-data; name="'
        + name
        + b'"; filename="'
        + filename
        + b'"\r\nContent-Type: '
        + content_type
        + b"\r\n\r\n"
        + data
    )


def form(*parts: bytes, boundary: bytes = BOUNDARY) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--\r\n"


def post_form(
    watchdog: Watchdog,
    body: bytes,
    content_type: str = FORM_TYPE,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = watchdog.connection(timeout=20)
    try:
        conn.putrequest("POST", "/", skip_accept_encoding=True)
        conn.putheader("Content-Type", content_type)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def report(watchdog: Watchdog, body: bytes, **kwargs: Any) -> dict[str, Any]:
    status, answer = post_form(watchdog, body, **kwargs)
    assert status == 200, answer
    result: dict[str, Any] = json.loads(answer)
    return result


def form_dirs(watchdog: Watchdog) -> list[Path]:
    return sorted(watchdog.tmpdir.glob("fwatchdog-form-*"))


def seen_dir(watchdog: Watchdog) -> Path:
    """The Http_Form_Dir the function recorded."""
    return Path((watchdog.tmpdir / "form-dir-seen").read_text())


def start(factory: Factory, mode: str, **settings: str) -> Watchdog:
    return factory(fprocess=REPORT, mode=mode, multipart="true", **settings)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- fields and files -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_text_fields_become_http_form_variables_and_stdin_is_empty(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = start(watchdog_factory, mode)
    body = form(
        text_part(b"title", b"hello world"),
        text_part(b"my-field", b"first"),
        text_part(b"my-field", b"second\r\nline"),
        text_part(b"caf\xc3\xa9", "gr\u00fc\u00dfe \u2603".encode()),
        text_part(b"empty", b""),
    )
    result = report(watchdog, body)
    env = result["env"]
    assert env["Http_Form_title"] == "hello world"
    assert env["Http_Form_my_field"] == "first\nsecond\r\nline"
    assert env["Http_Form_caf_"] == "gr\u00fc\u00dfe \u2603"
    assert env["Http_Form_empty"] == ""
    assert env["Http_Form_Files"] == ""
    assert env["CONTENT_LENGTH"] == "0"
    assert result["stdin"] == 0
    assert result["files"] == {}
    assert wait_until(lambda: form_dirs(watchdog) == [])


@pytest.mark.parametrize("mode", MODES)
def test_file_parts_are_saved_whole_and_listed_with_their_field(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = start(watchdog_factory, mode)
    # Bytes that look like a boundary, CRLFs and every byte value must arrive unchanged.
    tricky = b"\r\n--" + BOUNDARY[:-1] + b"\r\n" + bytes(range(256)) * 300 + b"\r\n"
    photo = bytes(range(256)) * 4096 + b"end"
    body = form(
        text_part(b"caption", b"two files"),
        file_part(b"photo", b"cat.jpg", photo, b"image/jpeg"),
        file_part(b"notes", b"notes.txt", tricky, b"text/plain"),
        file_part(b"nothing", b"empty.bin", b""),
    )
    result = report(watchdog, body)
    assert result["files"] == {
        "cat.jpg": {"size": len(photo), "sha256": sha256(photo)},
        "notes.txt": {"size": len(tricky), "sha256": sha256(tricky)},
        "empty.bin": {"size": 0, "sha256": sha256(b"")},
    }
    assert result["env"]["Http_Form_caption"] == "two files"
    assert result["env"]["Http_Form_Files"] == (
        "photo\tcat.jpg\timage/jpeg\tcat.jpg\n"
        "notes\tnotes.txt\ttext/plain\tnotes.txt\n"
        "nothing\tempty.bin\tapplication/octet-stream\tempty.bin\n"
    )
    assert result["env"]["Http_Form_Dir"].startswith(str(watchdog.tmpdir) + "/fwatchdog-form-")
    assert result["stdin"] == 0
    assert wait_until(lambda: not seen_dir(watchdog).exists())


def test_hostile_filenames_never_write_outside_the_form_directory(
    watchdog_factory: Factory,
) -> None:
    watchdog = start(watchdog_factory, "serializing")
    long_name = b"n" * 300 + b".txt"
    names = [
        b"../../x",
        b"/etc/passwd",
        b"a\x00b",
        b"",
        long_name,
        "r\u00e9sum\u00e9 \U0001f4c4.pdf".encode(),
        b"..",
        b"x",
        b"C:\\Users\\me\\report.doc",
        b"tab\there\nnewline",
    ]
    parts = [file_part(b"f", name, b"data %d" % i) for i, name in enumerate(names)]
    before = {p for p in watchdog.tmpdir.rglob("*")}
    result = report(watchdog, form(*parts))
    saved = list(result["files"])
    expected_long = "n" * 196 + ".txt"
    assert sorted(saved) == sorted(
        [
            "x",
            "passwd",
            "ab",
            "upload",
            expected_long,
            "r\u00e9sum\u00e9 \U0001f4c4.pdf",
            "upload-1",
            "x-1",
            "report.doc",
            "tabherenewline",
        ]
    )
    lines = result["env"]["Http_Form_Files"].splitlines()
    assert len(lines) == len(names)
    assert lines[0] == "f\tx\tapplication/octet-stream\t../../x"
    assert lines[2] == "f\tab\tapplication/octet-stream\ta?b"
    assert lines[9] == "f\ttabherenewline\tapplication/octet-stream\ttab?here?newline"
    for i, line in enumerate(lines):
        _field, saved_name, _, _ = line.split("\t")
        assert result["files"][saved_name]["sha256"] == sha256(b"data %d" % i)
    # Nothing new anywhere under $TMPDIR but the function's own note; the directory is gone.
    # The directory goes just after the answer; the lock file may appear after the port opens.
    assert wait_until(lambda: form_dirs(watchdog) == [])
    after = {p for p in watchdog.tmpdir.rglob("*")}
    assert after - before - {watchdog.lock_path} == {watchdog.tmpdir / "form-dir-seen"}


def test_a_filename_that_is_not_utf_8_keeps_its_bytes(watchdog_factory: Factory) -> None:
    watchdog = start(watchdog_factory, "streaming")
    result = report(watchdog, form(file_part(b"f", b"caf\xe9.txt", b"latin-1")))
    # The function sees the exact bytes (Python: surrogate escapes), on disk and in the listing.
    assert list(result["files"]) == ["caf\udce9.txt"]
    assert result["env"]["Http_Form_Files"] == (
        "f\tcaf\udce9.txt\tapplication/octet-stream\tcaf\udce9.txt\n"
    )


def test_a_text_field_over_64_kib_is_saved_as_a_file(watchdog_factory: Factory) -> None:
    watchdog = start(watchdog_factory, "streaming")
    big = b"z" * (64 * 1024 + 1)
    small = b"y" * (64 * 1024)
    result = report(watchdog, form(text_part(b"big", big), text_part(b"small", small)))
    assert "Http_Form_big" not in result["env"]
    assert result["env"]["Http_Form_small"] == small.decode()
    assert result["files"] == {"big": {"size": len(big), "sha256": sha256(big)}}
    assert result["env"]["Http_Form_Files"] == "big\tbig\ttext/plain\t\n"


def test_an_rfc_5987_filename_is_decoded(watchdog_factory: Factory) -> None:
    watchdog = start(watchdog_factory, "serializing")
    part = (
        b'Content-Disposition: form-data; name="doc"; '
        b"filename*=UTF-8''r%C3%A9sum%C3%A9%2F..%2Fx.pdf\r\n\r\nPDF"
    )
    result = report(watchdog, form(part))
    assert result["files"] == {"x.pdf": {"size": 3, "sha256": sha256(b"PDF")}}
    assert result["env"]["Http_Form_Files"] == "doc\tx.pdf\t\tr\u00e9sum\u00e9/../x.pdf\n"


# --- the directory is removed whatever the outcome ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_directory_removed_after_the_function_fails(watchdog_factory: Factory, mode: str) -> None:
    watchdog = start(watchdog_factory, mode)
    body = form(file_part(b"f", b"a.bin", b"x" * 1000))
    status, _ = post_form(watchdog, body, headers={"X-Exit": "1"})
    assert status == 500
    assert wait_until(lambda: not seen_dir(watchdog).exists())
    assert wait_until(lambda: form_dirs(watchdog) == [])


@pytest.mark.parametrize("mode", MODES)
def test_directory_removed_after_exec_timeout(watchdog_factory: Factory, mode: str) -> None:
    watchdog = start(watchdog_factory, mode, exec_timeout="500ms")
    body = form(file_part(b"f", b"a.bin", b"x" * 1000))
    status, _ = post_form(watchdog, body, headers={"X-Sleep": "10"})
    assert status in (500, 504)
    assert wait_until(lambda: not seen_dir(watchdog).exists())
    assert wait_until(lambda: form_dirs(watchdog) == [])


@pytest.mark.parametrize("mode", MODES)
def test_directory_removed_when_the_client_leaves_mid_form(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = start(watchdog_factory, mode)
    start_of_form = b"--" + BOUNDARY + b"\r\n" + file_part(b"f", b"big.bin", b"x" * 200_000)
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {FORM_TYPE}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(head + start_of_form)
        assert wait_until(lambda: any(d.glob("big.bin") for d in form_dirs(watchdog)))
    assert wait_until(lambda: form_dirs(watchdog) == [])
    assert not (watchdog.tmpdir / "form-dir-seen").exists()


# --- bad input and limits -------------------------------------------------------------------------

GOOD = form(text_part(b"a", b"1"), file_part(b"f", b"f.txt", b"data"))
BAD_FORMS = {
    "no_boundary": ("multipart/form-data", GOOD),
    "empty_boundary": ("multipart/form-data; boundary=", GOOD),
    "truncated": (FORM_TYPE, GOOD[:-30]),
    "no_closing_boundary": (FORM_TYPE, GOOD[: GOOD.rindex(b"--" + BOUNDARY + b"--")]),
    "part_without_a_name": (FORM_TYPE, form(b"Content-Disposition: form-data\r\n\r\nx")),
    "part_without_disposition": (FORM_TYPE, form(b"Content-Type: text/plain\r\n\r\nx")),
    "not_a_form_at_all": (FORM_TYPE, b"hello, this is not multipart\r\n"),
    "empty_body": (FORM_TYPE, b""),
}


@pytest.mark.parametrize("case", sorted(BAD_FORMS))
@pytest.mark.parametrize(("mode", "multipart"), VARIANTS)
def test_malformed_form_is_400_and_the_function_never_answers(
    watchdog_factory: Factory, mode: str, multipart: str, case: str
) -> None:
    # (multipart=stream may have started the function at the first file part: it is killed.)
    watchdog = watchdog_factory(fprocess=REPORT, mode=mode, multipart=multipart)
    content_type, body = BAD_FORMS[case]
    status, answer = post_form(watchdog, body, content_type=content_type)
    assert status == 400, answer
    assert answer.count(b"\n") <= 1 and answer.strip(), answer
    assert not (watchdog.tmpdir / "form-dir-seen").exists()
    assert wait_until(lambda: form_dirs(watchdog) == [])
    # The connection's next request is still served.
    assert report(watchdog, GOOD)["env"]["Http_Form_a"] == "1"


@pytest.mark.parametrize(("mode", "multipart"), VARIANTS)
def test_more_parts_than_multipart_max_parts_is_413(
    watchdog_factory: Factory, mode: str, multipart: str
) -> None:
    watchdog = watchdog_factory(
        fprocess=REPORT, mode=mode, multipart=multipart, multipart_max_parts="3"
    )
    three = [text_part(b"a", b"1"), text_part(b"b", b"2"), file_part(b"f", b"f", b"3")]
    assert report(watchdog, form(*three))["env"]["Http_Form_b"] == "2"
    (watchdog.tmpdir / "form-dir-seen").unlink()
    status, answer = post_form(watchdog, form(*three, text_part(b"d", b"4")))
    assert status == 413
    assert b"more than 3 parts" in answer
    assert not (watchdog.tmpdir / "form-dir-seen").exists()
    assert wait_until(lambda: form_dirs(watchdog) == [])


@pytest.mark.parametrize(("mode", "multipart"), VARIANTS)
def test_text_fields_over_multipart_max_fields_size_is_413(
    watchdog_factory: Factory, mode: str, multipart: str
) -> None:
    watchdog = watchdog_factory(
        fprocess=REPORT, mode=mode, multipart=multipart, multipart_max_fields_size="10"
    )
    # Files do not count towards the limit; text fields do, together.
    ok = form(
        text_part(b"a", b"12345"), text_part(b"b", b"67890"), file_part(b"f", b"f", b"x" * 99)
    )
    assert report(watchdog, ok)["env"]["Http_Form_b"] == "67890"
    status, answer = post_form(
        watchdog, form(text_part(b"a", b"12345"), text_part(b"b", b"678901"))
    )
    assert status == 413
    assert b"larger than 10 bytes" in answer
    assert wait_until(lambda: form_dirs(watchdog) == [])


# --- other requests are untouched -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_requests_that_are_not_forms_reach_stdin_unchanged(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = start(watchdog_factory, mode)
    result = report(watchdog, b"a" * 1234, content_type="application/x-www-form-urlencoded")
    assert result["stdin"] == 1234
    assert "Http_Form_Dir" not in result["env"]


@pytest.mark.parametrize("mode", MODES)
def test_multipart_off_by_default_passes_the_form_to_stdin(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = watchdog_factory(fprocess=REPORT, mode=mode)
    result = report(watchdog, GOOD)
    assert result["stdin"] == len(GOOD)
    assert "Http_Form_Dir" not in result["env"]


def test_afterburn_mode_passes_a_form_through_unchanged_with_multipart_true(
    watchdog_factory: Factory,
) -> None:
    # ab_raw.py echoes method, target and body: the function parses the form itself.
    watchdog = watchdog_factory(
        mode="afterburn",
        fprocess=f"{sys.executable} {function('ab_raw.py')}",
        multipart="true",
        exec_timeout="5s",
    )
    status, answer = post_form(watchdog, GOOD)
    assert status == 200, answer
    assert answer.endswith(GOOD)
    assert form_dirs(watchdog) == []


def test_multipart_setting_rejects_unknown_values(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(wait=False, fprocess="cat", multipart="yes")
    assert watchdog.process.wait(10) != 0
    assert "multipart: 'yes' is not one of false, true, stream" in watchdog.log()


def test_multipart_stream_needs_streaming_mode(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(wait=False, fprocess="cat", mode="serializing", multipart="stream")
    assert watchdog.process.wait(10) != 0
    assert "multipart: 'stream' needs mode=streaming" in watchdog.log()


@pytest.mark.parametrize("mode", MODES)
def test_directory_removed_when_the_client_leaves_while_the_function_runs(
    watchdog_factory: Factory, mode: str
) -> None:
    watchdog = start(watchdog_factory, mode, exec_timeout="10s")
    body = form(file_part(b"f", b"a.bin", b"x" * 1000))
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nX-Sleep: 2\r\n"
        f"Content-Type: {FORM_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(head + body)
        assert wait_until(lambda: (watchdog.tmpdir / "form-dir-seen").exists())
        assert seen_dir(watchdog).is_dir()
    # At the latest when the function ends by itself.
    assert wait_until(lambda: form_dirs(watchdog) == [], timeout=8)


# --- memory -----------------------------------------------------------------------------------

GIB = 1024**3


@pytest.mark.parametrize(
    ("multipart", "fprocess", "expected"),
    [
        ("true", function("form_sizes.sh"), f"{2 * GIB} big.mp4"),  # saved to disk
        ("stream", "wc -c", f"{2 * GIB}\n"),  # streamed into stdin
    ],
    ids=["true", "stream"],
)
def test_a_2_gib_file_part_is_decoded_in_constant_memory(
    watchdog_factory: Factory, multipart: str, fprocess: str, expected: str
) -> None:
    watchdog = watchdog_factory(
        fprocess=fprocess, mode="streaming", multipart=multipart, exec_timeout="60s"
    )
    start_of_form = b"--" + BOUNDARY + b"\r\n" + file_part(b"video", b"big.mp4", b"")
    end_of_form = b"\r\n--" + BOUNDARY + b"--\r\n"
    length = len(start_of_form) + 2 * GIB + len(end_of_form)
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: {FORM_TYPE}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    block = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=30) as sock:
        sock.sendall(head + start_of_form)
        for _ in range(2 * 1024):
            sock.sendall(block)
        sock.sendall(end_of_form)
        answer = read_response(sock)
    assert answer.status == 200, answer.raw_head
    assert expected.encode() in answer.body
    assert watchdog.vmhwm_kib() < 40 * 1024
    assert wait_until(lambda: form_dirs(watchdog) == [])


# --- multipart=stream -----------------------------------------------------------------------------


def start_stream(factory: Factory, **settings: str) -> Watchdog:
    return factory(
        fprocess=function("form_stream.sh"), mode="streaming", multipart="stream", **settings
    )


def test_stream_sends_the_first_file_part_to_stdin_and_saves_later_parts(
    watchdog_factory: Factory,
) -> None:
    watchdog = start_stream(watchdog_factory)
    first = b"\r\n--" + BOUNDARY[:-1] + b"\r\n" + bytes(range(256)) * 1200
    second = b"second file" * 1000
    body = form(
        text_part(b"title", b"holiday"),
        file_part(b"video", b"../clip.mp4", first, b"video/mp4"),
        text_part(b"after", b"late"),
        file_part(b"thumb", b"thumb.png", second, b"image/png"),
    )
    status, answer = post_form(watchdog, body)
    assert status == 200, answer
    lines = answer.decode().splitlines()
    assert lines[0] == (
        "started field=video name=../clip.mp4 type=video/mp4 title=holiday after=unset"
    )
    assert lines[1] == "content_length=unset"
    assert lines[2] == f"stdin {sha256(first)}"
    assert lines[3:] == [f"file thumb.png {sha256(second)}"]
    assert wait_until(lambda: form_dirs(watchdog) == [])


def test_stream_starts_the_function_before_the_form_has_arrived(
    watchdog_factory: Factory,
) -> None:
    watchdog = start_stream(watchdog_factory)
    start_of_form = form(text_part(b"title", b"t"))[: -len(BOUNDARY) - 6]  # no closing boundary
    start_of_form += b"--" + BOUNDARY + b"\r\n" + file_part(b"f", b"a.bin", b"x" * 1000)
    rest = b"y" * 1000 + b"\r\n--" + BOUNDARY + b"--\r\n"
    length = len(start_of_form) + len(rest)
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: {FORM_TYPE}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(head + start_of_form)
        answer = b""
        while b"started" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        sock.sendall(rest)
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert sha256(b"x" * 1000 + b"y" * 1000).encode() in answer


def test_stream_form_cut_off_kills_the_function_and_answers_400(
    watchdog_factory: Factory,
) -> None:
    watchdog = watchdog_factory(fprocess="sha256sum", mode="streaming", multipart="stream")
    body = form(file_part(b"a", b"a.bin", b"a" * 5000), file_part(b"b", b"b.bin", b"b" * 5000))
    status, answer = post_form(watchdog, body[:-40])
    assert status == 400, answer
    assert b"cut off" in answer
    assert wait_until(lambda: form_dirs(watchdog) == [])


def test_stream_without_a_file_part_runs_like_multipart_true(watchdog_factory: Factory) -> None:
    watchdog = start_stream(watchdog_factory)
    status, answer = post_form(watchdog, form(text_part(b"title", b"only text")))
    assert status == 200, answer
    lines = answer.decode().splitlines()
    assert lines[0] == "started field= name= type= title=only text after=unset"
    assert lines[1] == "content_length=0"
    assert lines[2] == f"stdin {sha256(b'')}"
    assert wait_until(lambda: form_dirs(watchdog) == [])


def test_stream_client_leaving_mid_form_kills_the_function_and_removes_the_directory(
    watchdog_factory: Factory,
) -> None:
    watchdog = start_stream(watchdog_factory)
    start_of_form = (
        b"--" + BOUNDARY + b"\r\n" + file_part(b"a", b"a.bin", b"a" * 1000) + b"\r\n"
        b"--" + BOUNDARY + b"\r\n" + file_part(b"b", b"b.bin", b"b" * 100_000)
    )
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {FORM_TYPE}\r\nContent-Length: 10000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        sock.sendall(head + start_of_form)
        assert wait_until(lambda: any(d.glob("b.bin") for d in form_dirs(watchdog)))
    assert wait_until(lambda: form_dirs(watchdog) == [])
    # Killed while waiting for stdin's end: it never got to list the directory.
    time.sleep(0.2)
    assert not (watchdog.tmpdir / "form-dir-seen").exists()


# --- the example: an HTML form served in static mode, posted the way a browser does ---------------

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multipart_upload"


class _FormFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str] = {}
        self.inputs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.form = values
        elif tag == "input":
            self.inputs.append((values.get("name", ""), values.get("type", "text")))


def test_example_upload_page_posts_a_form_the_hash_function_reads(
    watchdog_factory: Factory,
) -> None:
    page = watchdog_factory(mode="static", static_path=str(EXAMPLE / "public"))
    hasher = watchdog_factory(
        mode="streaming",
        multipart="true",
        fprocess=f"{sys.executable} {EXAMPLE / 'hash.py'}",
        content_type="text/plain; charset=utf-8",
    )
    status, _, html = page.request("GET", "/")
    assert status == 200
    finder = _FormFinder()
    finder.feed(html.decode())
    assert finder.form["method"] == "post"
    assert finder.form["enctype"] == "multipart/form-data"
    assert finder.inputs == [("title", "text"), ("file", "file")]
    # What Chrome sends for that form: its boundary style, a quoted filename, the file's type.
    boundary = b"----WebKitFormBoundaryq3UsPZ3xgyH4Z2kQ"
    photo = bytes(range(256)) * 1000
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="title"\r\n\r\n'
        b"Summer \xe2\x98\x80\r\n"
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="beach photo.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n"
        b"--" + boundary + b"--\r\n"
    )
    conn = hasher.connection()
    try:
        conn.request(
            "POST",
            finder.form["action"],
            body=body,
            headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()},
        )
        response = conn.getresponse()
        answer = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200, answer
    assert answer == (
        "title: Summer \u2600\n"
        f"file: beach photo.jpg (image/jpeg, {len(photo)} bytes) sha256={sha256(photo)}\n"
    )
    assert wait_until(lambda: form_dirs(hasher) == [])


def test_http_mode_passes_a_form_through_unchanged_with_multipart_true(
    watchdog_factory: Factory,
) -> None:
    # The upstream's /echo reports the body it received: the form, byte for byte.
    watchdog = watchdog_factory(**http_mode_settings(multipart="true", exec_timeout="5s"))
    deadline = time.monotonic() + 10
    while watchdog.request("GET", "/_/health")[0] != 200:
        assert time.monotonic() < deadline, watchdog.log()
        time.sleep(0.05)
    conn = watchdog.connection(timeout=20)
    try:
        conn.putrequest("POST", "/echo", skip_accept_encoding=True)
        conn.putheader("Content-Type", FORM_TYPE)
        conn.putheader("Content-Length", str(len(GOOD)))
        conn.endheaders(GOOD)
        response = conn.getresponse()
        status, answer = response.status, response.read()
    finally:
        conn.close()
    assert status == 200, answer
    assert json.loads(answer)["body"].encode("latin-1") == GOOD
    assert form_dirs(watchdog) == []
