"""Header policy for every mode that passes a message on (http, afterburn), and targets.

One place decides what a proxy must not forward: hop-by-hop fields (RFC 9110 7.6.1), the
fields a `Connection` header lists, and `Proxy-*` (httpoxy; `Proxy-Authorization` is for the
proxy itself). Targets are parsed here too: the path a route is decided on is the decoded
path of an origin-form or absolute-form target, and an upstream always gets origin-form.
"""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    )
)
# Connection options that are not field names.
CONNECTION_OPTIONS = frozenset(("close", "keep-alive", "upgrade"))
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
_CONNECTION_OPTIONS_BYTES = frozenset(option.encode() for option in CONNECTION_OPTIONS)


def connection_listed(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The field names that the message's Connection headers list (options left out)."""
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            listed.update(token.strip().lower() for token in value.split(","))
    return frozenset(listed - CONNECTION_OPTIONS - {""})


def is_hop_by_hop(lowered: str, listed: frozenset[str] = frozenset()) -> bool:
    """Whether a field (its lower-cased name) stops at this hop."""
    return lowered in HOP_BY_HOP or lowered.startswith("proxy-") or lowered in listed


def end_to_end(
    headers: list[tuple[str, str]], also_drop: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """The fields a proxy passes on: all but hop-by-hop ones and `also_drop` (lower-case)."""
    listed = connection_listed(headers)
    return [
        (name, value)
        for name, value in headers
        if not is_hop_by_hop(lowered := name.lower(), listed) and lowered not in also_drop
    ]


def dropped_raw_names(
    headers: list[tuple[bytes, bytes]], also_drop: frozenset[bytes] = frozenset()
) -> tuple[set[bytes], int]:
    """Among fields as the parser gives them (bytes), the lower-cased names `end_to_end` would
    not pass on (and `also_drop`), and how many of the fields have them."""
    lowered_names = [name.lower() for name, _ in headers]
    listed: set[bytes] = set()
    if b"connection" in lowered_names:
        for (_, value), lowered in zip(headers, lowered_names, strict=True):
            if lowered == b"connection":
                listed.update(token.strip().lower() for token in value.split(b","))
        listed -= _CONNECTION_OPTIONS_BYTES
    dropped: set[bytes] = set()
    count = 0
    for lowered in lowered_names:
        if (
            lowered in _HOP_BY_HOP_BYTES
            or lowered in listed
            or lowered in also_drop
            or lowered[:6] == b"proxy-"
        ):
            dropped.add(lowered)
            count += 1
    return dropped, count


def end_to_end_raw(
    headers: Iterable[tuple[bytes, bytes]], also_drop: frozenset[bytes] = frozenset()
) -> list[tuple[str, str]]:
    """`end_to_end` for fields as a response parser gives them (bytes), decoded."""
    fields = list(headers)
    dropped, count = dropped_raw_names(fields, also_drop)
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in fields
        if not count or name.lower() not in dropped
    ]


def only_options(connection: bytes) -> bool:
    """Whether a Connection header's value names only options, no field to drop."""
    if connection.lower() in _CONNECTION_OPTIONS_BYTES:
        return True  # the usual `keep-alive` or `close`
    return all(
        token.strip().lower() in _CONNECTION_OPTIONS_BYTES or not token.strip()
        for token in connection.split(b",")
    )


def origin_form(target: str) -> str:
    """The target as an origin server takes it: `http://host/x?y` -> `/x?y`; `*` stays."""
    if target.startswith("/") or "://" not in target:
        return target
    rest = target.split("://", 1)[1]
    start = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=-1)
    if start < 0:
        return "/"
    return rest[start:] if rest[start] == "/" else "/" + rest[start:]


def split_target(target: str) -> tuple[str, str]:
    """The decoded path and the raw query of a request target (origin- or absolute-form)."""
    if target[:1] == "/" and "?" not in target and "%" not in target and "#" not in target:
        return target, ""  # the common case, decided in four string scans
    raw_path, _, query = origin_form(target).partition("?")
    raw_path = raw_path.split("#", 1)[0]
    if "%" in raw_path:
        from urllib.parse import unquote  # not at start-up: it costs 0.8 MiB

        raw_path = unquote(raw_path)
    return raw_path or "/", query.split("#", 1)[0]
