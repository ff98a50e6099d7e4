"""What a file's response says about it, and what the client's conditions make of that.

Pure functions over a file's size, mtime and name plus the request headers: Content-Type,
the validators (a strong ETag from size and mtime, Last-Modified), the RFC 9110 order of
preconditions (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since), and Range
with If-Range, including the layout of a `multipart/byteranges` body. No I/O here.
"""

from __future__ import annotations

import datetime
import functools
import mimetypes
import re
import secrets
from dataclasses import dataclass, field

from fwatchdog.http.dates import format_http_date
from fwatchdog.http.request import FieldNames, Request

TEXT_PLAIN = "text/plain; charset=utf-8"
TEXT_HTML = "text/html; charset=utf-8"
OCTET_STREAM = "application/octet-stream"

# Web types fixed here, so that a Content-Type does not depend on the image's /etc/mime.types;
# other extensions fall back to Python's table (which reads the system's).
_CONTENT_TYPES = {
    ".html": TEXT_HTML,
    ".htm": TEXT_HTML,
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".xml": "text/xml; charset=utf-8",
    ".txt": TEXT_PLAIN,
    ".md": "text/markdown; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
    ".bin": OCTET_STREAM,
}
# Extensions looked up in Python's table, remembered (only names of files that exist get here).
_GUESSED: dict[str, str | None] = {}
_GUESSED_MAX = 1024
_CHARSET_TYPES = ("application/javascript", "application/xml", "application/x-sh")
_SNIFF_BYTES = 512
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D, 0x1B}

# More ranges than this in one request are ignored (the whole file is sent), as are ranges
# adding up to more than the file: overlapping ranges must not multiply the bytes we send.
MAX_RANGES = 32


def content_type_for(name: bytes) -> str | None:
    """Content-Type from the file name's extension; None when it says nothing."""
    dot = name.rfind(b".")
    if dot <= 0:
        return None
    extension = name[dot:].decode("latin-1").lower()
    known = _CONTENT_TYPES.get(extension)
    if known is not None:
        return known
    if extension in _GUESSED:
        return _GUESSED[extension]
    guessed, _ = mimetypes.guess_type("f" + extension, strict=False)
    if guessed is not None and (guessed.startswith("text/") or guessed in _CHARSET_TYPES):
        guessed += "; charset=utf-8"
    if len(_GUESSED) < _GUESSED_MAX:
        _GUESSED[extension] = guessed
    return guessed


def sniff_content_type(head: bytes) -> str:
    """Content-Type from the first bytes, for names without a known extension (as Go does)."""
    head = head[:_SNIFF_BYTES]
    lowered = head.lstrip(b" \t\r\n\x0c").lower()
    if lowered.startswith(_HTML_STARTS):
        return TEXT_HTML
    if any(byte in _CONTROL for byte in head):
        return OCTET_STREAM
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the sniff window is still text.
        if error.start < len(head) - 3:
            return OCTET_STREAM
    return TEXT_PLAIN


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch of an HTTP date (any of its three formats); None if invalid."""
    if len(text) > _DATE_KEPT_LENGTH:  # no HTTP date is this long: not worth remembering
        return _parse_http_date(text)
    return _parse_short_http_date(text)


# Clients revalidating a file send back the Last-Modified it was served with: the same few
# strings again and again.
_DATE_KEPT_LENGTH = 64


@functools.lru_cache(maxsize=256)
def _parse_short_http_date(text: str) -> int | None:
    return _parse_http_date(text)


def _parse_http_date(text: str) -> int | None:
    # Imported here: it costs start-up time, and only conditional requests need it.
    from email.utils import parsedate_to_datetime

    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        if not _ASCTIME.fullmatch(text):
            return None  # a date without a zone
        parsed = parsed.replace(tzinfo=datetime.UTC)  # asctime's are in UTC
    return int(parsed.timestamp())


# C's asctime() format, the third an HTTP date may have (RFC 9110 5.6.7): no zone, always UTC.
_ASCTIME = re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies one version of a file: its ETag and its mtime (whole seconds)."""

    size: int
    mtime_ns: int
    etag: str = field(init=False)
    mtime: int = field(init=False)
    last_modified: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", f'"{self.mtime_ns:x}-{self.size:x}"')
        object.__setattr__(self, "mtime", self.mtime_ns // 1_000_000_000)
        object.__setattr__(self, "last_modified", format_http_date(self.mtime))


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request headers that can change a file's response, raw; absent ones are None."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None
    range: str | None = None
    if_range: str | None = None

    @property
    def any(self) -> bool:
        return (
            self.if_match is not None
            or self.if_none_match is not None
            or self.if_modified_since is not None
            or self.if_unmodified_since is not None
            or self.range is not None
        )


NO_CONDITIONS = Conditions()

# In the order of Conditions' fields.
_CONDITION_FIELDS = FieldNames(
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "range", "if-range"
)


def conditions_of(request: Request) -> Conditions:
    """The conditional and range headers of a request (the first of each), read from its
    fields in one pass without decoding the others (NO_CONDITIONS when it has none)."""
    values = request.headers_named(_CONDITION_FIELDS)
    if values.count(None) == len(values):
        return NO_CONDITIONS
    return Conditions(*[None if value is None else value.strip() for value in values])


_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


def _entity_tags(text: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque-tag) pairs of an If-Match / If-None-Match list; None for `*`."""
    if text.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(text):
        match = _ENTITY_TAG.match(text, position)
        if match is None:
            break  # the rest is malformed: use what was understood
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return tags


def _strong_match(header: str, etag: str) -> bool:
    tags = _entity_tags(header)
    return tags is None or any(not weak and tag == etag for weak, tag in tags)


def _weak_match(header: str, etag: str) -> bool:
    tags = _entity_tags(header)
    return tags is None or any(tag == etag for _, tag in tags)


def precondition_status(conditions: Conditions, validators: Validators) -> int | None:
    """412 or 304 when the preconditions say so (RFC 9110 §13.2.2), else None."""
    if conditions.if_match is not None:
        if not _strong_match(conditions.if_match, validators.etag):
            return 412
    elif conditions.if_unmodified_since is not None:
        since = parse_http_date(conditions.if_unmodified_since)
        if since is not None and validators.mtime > since:
            return 412
    if conditions.if_none_match is not None:
        if _weak_match(conditions.if_none_match, validators.etag):
            return 304
    elif conditions.if_modified_since is not None:
        since = parse_http_date(conditions.if_modified_since)
        if since is not None and validators.mtime <= since:
            return 304
    return None


class Unsatisfiable(Exception):
    """No range of the request overlaps the file: 416."""


_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


def requested_ranges(conditions: Conditions, validators: Validators) -> list[tuple[int, int]]:
    """The (start, length) ranges to send; [] for the whole file; raises Unsatisfiable.

    A Range we do not understand, one that If-Range rules out, or one that would send more
    than the file (too many or overlapping ranges) means the whole file, as RFC 9110 allows.
    """
    header = conditions.range
    if header is None:
        return []
    if conditions.if_range is not None and not _if_range_holds(conditions.if_range, validators):
        return []
    unit, equals, specs = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return []
    size = validators.size
    ranges: list[tuple[int, int]] = []
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        return []
    for part in parts:
        if not part.strip():
            continue  # RFC 9110 allows empty list elements
        match = _RANGE_SPEC.fullmatch(part)
        if match is None:
            return []
        first, last = match.groups()
        if not first:
            if not last:
                return []
            suffix = int(last)
            if suffix == 0 or size == 0:
                continue  # unsatisfiable on its own
            start = max(0, size - suffix)
            ranges.append((start, size - start))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return []
        if start >= size:
            continue
        end = min(end, size - 1)
        ranges.append((start, end - start + 1))
    if not ranges:
        raise Unsatisfiable
    if sum(length for _, length in ranges) > size:
        return []
    return ranges


def _if_range_holds(if_range: str, validators: Validators) -> bool:
    """Whether the client's copy is this version, so a partial response fits it."""
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range == validators.etag  # a strong comparison: a weak tag never holds
    since = parse_http_date(if_range)
    return since is not None and since == validators.mtime


def content_range(start: int, length: int, size: int) -> str:
    return f"bytes {start}-{start + length - 1}/{size}"


@dataclass(frozen=True, slots=True)
class Multipart:
    """The layout of a `multipart/byteranges` body: part heads between file ranges."""

    content_type: str
    heads: tuple[bytes, ...]  # one before each range
    tail: bytes
    length: int


def multipart_layout(ranges: list[tuple[int, int]], part_type: str, size: int) -> Multipart:
    boundary = secrets.token_hex(16)
    heads: list[bytes] = []
    total = 0
    for index, (start, length) in enumerate(ranges):
        head = (
            ("\r\n" if index else "")
            + f"--{boundary}\r\nContent-Type: {part_type}\r\n"
            + f"Content-Range: {content_range(start, length, size)}\r\n\r\n"
        ).encode("latin-1")
        heads.append(head)
        total += len(head) + length
    tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return Multipart(
        f"multipart/byteranges; boundary={boundary}", tuple(heads), tail, total + len(tail)
    )
