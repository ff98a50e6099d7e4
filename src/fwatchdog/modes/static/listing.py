"""The HTML listing of a directory without `index.html`, in the shape Go's file server uses.

Names are sorted by their bytes, escaped for HTML, and linked relatively and percent-encoded,
so a name can neither inject markup nor become a link to another host or scheme. Entries that
would not be served (dot-files, links leading outside the root) are left out, so a listing
reveals nothing that a request could not fetch.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from urllib.parse import quote

_HEAD = b'<!doctype html>\n<meta name="viewport" content="width=device-width">\n<pre>\n'
_TAIL = b"</pre>\n"


def directory_listing(
    fd: int, path: bytes, dotfiles: bool, servable: Callable[[bytes], bool]
) -> bytes:
    """The listing of the open directory `fd`, found at `path`.

    `servable(entry_path)` decides about symbolic links, whose targets may lie anywhere.
    """
    entries: list[tuple[bytes, bool]] = []
    with os.scandir(fd) as scan:
        for entry in scan:
            name = os.fsencode(entry.name)
            if name.startswith(b".") and not dotfiles:
                continue
            try:
                if entry.is_symlink() and not servable(path.rstrip(b"/") + b"/" + name):
                    continue
                is_dir = entry.is_dir()
            except OSError:
                continue
            entries.append((name, is_dir))
    entries.sort()
    lines = [_HEAD]
    for name, is_dir in entries:
        suffix = "/" if is_dir else ""
        href = quote(name, safe="") + suffix
        text = html.escape(name.decode("utf-8", "replace") + suffix)
        lines.append(f'<a href="{href}">{text}</a>\n'.encode())
    lines.append(_TAIL)
    return b"".join(lines)
