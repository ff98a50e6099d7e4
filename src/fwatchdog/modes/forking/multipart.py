"""`multipart=true`: a multipart/form-data body decoded as it arrives, for forked functions.

One job: body chunks in, form out. Text fields become `Http_Form_<name>` variables (the name
cut down to `[A-Za-z0-9_]`, repeated fields joined by newlines); file parts, and text fields
longer than `TEXT_FIELD_MAX` or holding a NUL byte (which no environment variable can carry),
are written to disk as their bytes arrive, in a fresh directory per request (`Http_Form_Dir`,
under $TMPDIR), listed one per line in `Http_Form_Files` as
`<field>\\t<saved name>\\t<content type>\\t<original filename>`. Memory stays constant: the
body is read a chunk at a time, and the next chunk is read only once the last is on disk.

A form that is not well formed is a `FormError` with status 400 and a one-line reason; past
`multipart_max_parts` or `multipart_max_fields_size`, 413. Whatever the outcome, `Form.close()`
(or the error, when `read_form` raises) removes the directory and everything in it.

python-multipart is imported on first use, so the watchdog's start-up does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fwatchdog.http.request import Request
    from fwatchdog.settings.config import Config

TEXT_FIELD_MAX = 64 * 1024
FALLBACK_NAME = "upload"
# Room below NAME_MAX (255 bytes) for a collision suffix.
SAVED_NAME_MAX = 200
_UNSAFE_ENV_CHARS = re.compile(r"[^A-Za-z0-9_]")
# C0 controls, DEL and C1 controls; tab and newline too, which would break the Files listing.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MEDIA_TYPE = "multipart/form-data"
_EXTENDED_FILENAME = re.compile(rb"(?i);\s*filename\*\s*=\s*[A-Za-z0-9_-]*'[^']*'([^;\s]*)")


class FormError(Exception):
    """The form cannot be used: `status` (400 or 413) and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def is_form_data(request: Request) -> bool:
    """Whether the request says its body is multipart/form-data."""
    content_type = request.header("content-type")
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == _MEDIA_TYPE


def form_settings_apply(config: Config, request: Request) -> bool:
    """Whether `multipart` is on and this request is a form it should decode."""
    return config.multipart != "false" and is_form_data(request)


async def read_form(request: Request, config: Config) -> Form:
    """Decode the whole form from the request body; the caller must `close()` the result.

    Raises FormError (the rest of the body discarded) or the body's own BodyError; either way
    the directory is already gone.
    """
    form = Form(
        request.header("content-type") or "",
        max_parts=config.multipart_max_parts,
        max_fields_size=config.multipart_max_fields_size,
    )
    body = request.body
    try:
        while chunk := await body.read():
            await feed_off_loop(form, chunk)
        form.finish()
    except FormError:
        form.close()
        body.discard()
        raise
    except BaseException:
        form.close()
        raise
    return form


async def feed_off_loop(form: Form, chunk: bytes) -> None:
    """`form.feed(chunk)` on a worker thread: the parts it writes to disk must not stall the
    event loop (and every other request) when the disk is slow.

    If the request is cancelled meanwhile (client gone, write_timeout), the feed still runs to
    its end before the cancellation goes on, so that `form.close()` never closes a descriptor
    the thread is writing to (its number could already name another file or socket). A disk
    error saving a part becomes FormError 500.
    """
    future = asyncio.get_running_loop().run_in_executor(None, form.feed, chunk)
    try:
        await asyncio.shield(future)
    except OSError as error:
        raise FormError(500, f"multipart/form-data: cannot save a part: {error}") from None
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # seen: the cancellation is what goes on
        raise


def sanitize_env_name(name: str) -> str:
    """A field name as the tail of an environment variable name: `[A-Za-z0-9_]` only."""
    return _UNSAFE_ENV_CHARS.sub("_", name)


def sanitize_filename(filename: str) -> str:
    """A part's filename as a name that can only mean a file in the form's directory.

    Only the last path component is kept (`/` and `\\` both count, for Windows browsers),
    control characters are dropped, surrounding spaces and dots trimmed (no `.` or `..`, no
    hidden files), the result cut to `SAVED_NAME_MAX` UTF-8 bytes (keeping a short extension);
    `FALLBACK_NAME` when nothing is left.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL_CHARS.sub("", name).strip(" .")
    if not name:
        return FALLBACK_NAME
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > SAVED_NAME_MAX:
        stem, dot, extension = name.rpartition(".")
        if not dot or len(extension.encode("utf-8", "surrogateescape")) > 16:
            stem, extension = name, ""
        tail = f".{extension}" if extension else ""
        room = SAVED_NAME_MAX - len(tail.encode("utf-8", "surrogateescape"))
        stem = stem.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
        name = (stem.rstrip(" .") or FALLBACK_NAME) + tail
    return name


def _listing_text(text: str) -> str:
    """A value for one column of Http_Form_Files: no tab, newline or other control."""
    return _CONTROL_CHARS.sub("?", text)


def _decode(data: bytes) -> str:
    # surrogateescape: the exact bytes reach the environment (and the file system) again.
    return data.decode("utf-8", "surrogateescape")


class _Part:
    __slots__ = ("content_type", "fd", "field", "filename", "is_file", "saved_name", "text")

    def __init__(self, field: str, filename: str | None, content_type: str) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.is_file = filename is not None
        self.text = bytearray()
        self.fd = -1
        self.saved_name = ""


class Form:
    """One request's form as it is decoded: `feed()` chunks, `finish()`, then `environment()`."""

    def __init__(
        self,
        content_type: str,
        *,
        max_parts: int,
        max_fields_size: int,
        stream_first_file: bool = False,
    ) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._parse_options = parse_options_header
        media_type, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if media_type != _MEDIA_TYPE.encode() or not boundary:
            raise FormError(400, "multipart/form-data without a boundary")
        self._max_parts = max_parts
        self._max_fields_size = max_fields_size
        self._parts = 0
        self._fields_size = 0
        self._ended = False
        self._fields: dict[str, list[str]] = {}
        self._files: list[str] = []
        self._saved: set[str] = set()
        self._part: _Part | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        # multipart=stream: the first file part goes to stdin instead of a file.
        self._stream_first_file = stream_first_file
        self._stdin_part: _Part | None = None
        self._stdin_pending: list[memoryview] = []
        self.stream_environment: dict[str, str] | None = None
        self.directory = ""
        callbacks: Any = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except ValueError as error:  # FormParserError: a boundary too long
            raise FormError(400, f"multipart/form-data: {error}") from None
        import tempfile  # lazily, with python-multipart: start-up does not pay for either

        self.directory = tempfile.mkdtemp(prefix="fwatchdog-form-")

    # --- input -------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        """Decode one chunk of the body; raises FormError (or OSError from the disk)."""
        if self._ended:
            return  # the epilogue after the closing boundary: ignored, as RFC 2046 says
        from python_multipart.exceptions import FormParserError

        try:
            self._parser.write(chunk)
        except FormParserError as error:
            raise FormError(400, f"malformed multipart/form-data: {error}") from None

    def finish(self) -> None:
        """The body has ended: it must have ended the form too."""
        if not self._ended:
            raise FormError(400, "multipart/form-data cut off before its closing boundary")

    # --- output ------------------------------------------------------------------------------

    def take_stdin(self) -> list[memoryview]:
        """multipart=stream: the streamed part's bytes decoded since the last call."""
        pending = self._stdin_pending
        self._stdin_pending = []
        return pending

    def environment(self) -> dict[str, str]:
        """`Http_Form_*` variables for the function (Dir and Files win over fields so named)."""
        env = {f"Http_Form_{name}": "\n".join(values) for name, values in self._fields.items()}
        env["Http_Form_Dir"] = self.directory
        env["Http_Form_Files"] = "".join(line + "\n" for line in self._files)
        return env

    def close(self) -> None:
        """Remove the directory and everything in it (idempotent)."""
        part = self._part
        if part is not None and part.fd >= 0:
            os.close(part.fd)
            part.fd = -1
        if self.directory:
            import shutil

            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = ""

    # --- parser callbacks --------------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise FormError(413, f"multipart/form-data has more than {self._max_parts} parts")
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = bytes(self._header_field).strip().lower()
        self._headers.setdefault(name, bytes(self._header_value).strip())
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise FormError(400, "multipart/form-data part without Content-Disposition")
        kind, options = self._parse_options(disposition)
        name = options.get(b"name")
        if kind != b"form-data" or not name:
            raise FormError(400, "multipart/form-data part without a name")
        filename = options.get(b"filename")
        if filename is None:
            filename = _extended_filename(disposition)
        content_type = self._headers.get(b"content-type", b"")
        part = _Part(
            _decode(name),
            None if filename is None else _decode(filename),
            _decode(content_type) if content_type else "",
        )
        self._part = part
        if part.is_file and self._stream_first_file and self._stdin_part is None:
            self._stdin_part = part
            env = self.environment()
            env["Http_Form_File_Field"] = _listing_text(part.field)
            env["Http_Form_File_Name"] = _listing_text(part.filename or "")
            env["Http_Form_File_Content_Type"] = _listing_text(part.content_type)
            self.stream_environment = env
        elif part.is_file:
            self._open_file(part)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        if part is self._stdin_part:
            self._stdin_pending.append(memoryview(data)[start:end])
            return
        if part.fd >= 0:
            _write_all(part.fd, memoryview(data)[start:end])
            return
        part.text += data[start:end]
        if len(part.text) > TEXT_FIELD_MAX:
            self._spill(part)

    def _on_part_end(self) -> None:
        part = self._part
        assert part is not None
        self._part = None
        if part is self._stdin_part:
            return
        if not part.is_file and b"\0" in part.text:
            self._spill(part)
        if part.fd >= 0:
            os.close(part.fd)
            part.fd = -1
        if part.is_file:
            self._files.append(
                "\t".join(
                    (
                        _listing_text(part.field),
                        part.saved_name,
                        _listing_text(part.content_type),
                        _listing_text(part.filename or ""),
                    )
                )
            )
            return
        self._fields_size += len(part.text)
        if self._fields_size > self._max_fields_size:
            raise FormError(
                413,
                f"multipart/form-data text fields larger than {self._max_fields_size} bytes",
            )
        env_name = sanitize_env_name(part.field)
        self._fields.setdefault(env_name, []).append(_decode(bytes(part.text)))

    def _on_end(self) -> None:
        self._ended = True

    # --- files -------------------------------------------------------------------------------

    def _spill(self, part: _Part) -> None:
        """A text field too large (or holding NUL) for the environment: a file instead."""
        part.is_file = True
        if not part.content_type:
            part.content_type = "text/plain"
        self._open_file(part)
        _write_all(part.fd, memoryview(part.text))
        part.text = bytearray()

    def _open_file(self, part: _Part) -> None:
        base = sanitize_filename(part.field if part.filename is None else part.filename)
        stem, dot, extension = base.rpartition(".")
        if not dot or not stem:
            stem, extension = base, ""
        name = base
        counter = 1
        while True:
            if name not in self._saved:
                try:
                    path = os.path.join(self.directory, name)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    part.fd = os.open(path, flags, 0o600)
                    break
                except FileExistsError:
                    pass  # the function cannot have run yet; but never overwrite
            name = f"{stem}-{counter}.{extension}" if extension else f"{stem}-{counter}"
            counter += 1
        self._saved.add(name)
        part.saved_name = name


def _extended_filename(disposition: bytes) -> bytes | None:
    """RFC 5987's `filename*=UTF-8''r%C3%A9sum%C3%A9.pdf`, which python-multipart ignores."""
    match = _EXTENDED_FILENAME.search(disposition)
    if match is None:
        return None
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(match.group(1))


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]
