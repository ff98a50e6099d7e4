"""Fuzz static path resolution: no request-target opens anything outside the root.

The root holds a file, a directory, a dot-file and symbolic links that lead out of it (to /etc
and to the file beside the root); whatever the target, what `open` returns is a descriptor
whose kernel name lies under the root.
"""

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from fwatchdog.modes.static.paths import Forbidden, StaticRoot, parse_url_path, raw_path_of

_base = tempfile.mkdtemp(prefix="fuzz-static-")
_outside = os.path.join(_base, "secret")
with open(_outside, "w") as _file:
    _file.write("secret")
ROOT_DIR = os.path.join(_base, "root")
os.makedirs(os.path.join(ROOT_DIR, "dir", "sub"))
for _name in ("index.html", "dir/file.txt", ".hidden", "dir/sub/a b.txt"):
    with open(os.path.join(ROOT_DIR, _name), "w") as _file:
        _file.write(_name)
os.symlink("/etc", os.path.join(ROOT_DIR, "etc"))
os.symlink(_outside, os.path.join(ROOT_DIR, "dir", "secret"))
os.symlink("../..", os.path.join(ROOT_DIR, "dir", "up"))
ROOTS = (StaticRoot(ROOT_DIR, dotfiles=False), StaticRoot(ROOT_DIR, dotfiles=True))
REAL = os.path.realpath(ROOT_DIR).encode()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    root = ROOTS[data[0] & 1]
    target = data[1:].decode("latin-1")
    url = parse_url_path(raw_path_of(target), root.dotfiles)
    if url is None:
        return
    for segment in url.segments:
        assert segment not in (b"", b".", b"..") and b"/" not in segment and b"\0" not in segment
    assert not url.location(True, "").startswith("//")
    path = root.path_of(url.segments)
    try:
        opened = root.open(path)
    except Forbidden:
        return
    if opened is None:
        return
    try:
        real = os.readlink(f"/proc/self/fd/{opened.fd}").encode()
        assert real == REAL or real.startswith(REAL + b"/"), (target, real)
        if not root.dotfiles:
            assert b"/." not in real[len(REAL) :], (target, real)
        if opened.is_dir:
            index = root.open_index(opened)
            if index is not None:
                index.close()
    finally:
        opened.close()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
