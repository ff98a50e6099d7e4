"""The static file cache: trusted on inotify's word, re-checked once a second, stat without it."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fwatchdog.modes.static.cache import RECHECK_SECONDS, CachedFile, FileCache, identity_of


def cached(path: Path) -> CachedFile:
    data = path.read_bytes()
    return CachedFile(
        bytes(path),
        identity_of(os.stat(path)),
        None,  # type: ignore[arg-type]
        data,
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 304 Not Modified\r\n",
    )


def rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_without_inotify_every_use_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"one")
    cache = FileCache()
    cache.put("/a.txt", cached(path))
    assert cache.get("/a.txt") is not None
    assert cache.get("/a.txt") is not None
    rewrite(path, b"two")
    assert cache.get("/a.txt") is None


def test_with_inotify_a_change_under_the_root_empties_the_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "root"
        (root / "css").mkdir(parents=True)
        path = root / "css" / "a.css"
        path.write_bytes(b"a{}")
        cache = FileCache()
        assert cache.watch(bytes(root))
        cache.put("/css/a.css", cached(path))
        assert cache.get("/css/a.css") is not None  # checked once, then trusted
        (root / "css" / "b.css").write_bytes(b"b{}")  # any change in a watched directory
        await asyncio.sleep(0.05)  # the loop reads the event
        assert cache.get("/css/a.css") is None
        cache.close()

    asyncio.run(scenario())


def test_a_change_is_seen_before_the_loop_reads_its_event(tmp_path: Path) -> None:
    """epoll may hand the loop a request's socket before the inotify descriptor in one
    iteration: a request sent after the change is then answered before the event's reader
    runs. The cache must not trust an entry while an event waits unread."""

    async def scenario() -> None:
        root = tmp_path / "root"
        root.mkdir()
        path = root / "app.js"
        path.write_bytes(b"version = 1;")
        cache = FileCache()
        assert cache.watch(bytes(root))
        cache.put("/app.js", cached(path))
        assert cache.get("/app.js") is not None  # checked once, then trusted
        assert cache.get("/app.js") is not None
        rewrite(path, b"version = 22;")
        # No await: the loop has not run the inotify reader, as when the socket came first.
        assert cache.get("/app.js") is None
        cache.put("/app.js", cached(path))
        await asyncio.sleep(0.05)  # the reader runs now and finds the events read already
        entry = cache.get("/app.js")
        assert entry is not None and entry.body == b"version = 22;"
        cache.close()

    asyncio.run(scenario())


def test_a_change_inotify_cannot_see_is_seen_within_a_second(tmp_path: Path) -> None:
    """A hard link written through a directory outside the watched ones: no event reaches
    the cache, and the once-a-second check catches it."""

    async def scenario() -> None:
        root = tmp_path / "root"
        root.mkdir()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        path = root / "a.txt"
        path.write_bytes(b"one")
        os.link(path, elsewhere / "a.txt")
        cache = FileCache()
        assert cache.watch(bytes(root))
        cache.put("/a.txt", cached(path))
        assert cache.get("/a.txt") is not None
        with open(elsewhere / "a.txt", "r+b") as through_the_link:
            through_the_link.write(b"two!")
        await asyncio.sleep(0.05)
        assert cache.get("/a.txt") is not None  # trusted: no event came
        await asyncio.sleep(RECHECK_SECONDS + 0.2)
        assert cache.get("/a.txt") is None
        cache.close()

    asyncio.run(scenario())


def test_entries_trusted_before_inotify_stops_are_checked_again(tmp_path: Path) -> None:
    """Out of watches (or stopped), the cache goes back to a stat per use, for every entry."""

    async def scenario() -> None:
        path = tmp_path / "a.txt"
        path.write_bytes(b"one")
        cache = FileCache()
        assert cache.watch(bytes(tmp_path))
        cache.put("/a.txt", cached(path))
        assert cache.get("/a.txt") is not None  # trusted from now on
        cache.close()
        rewrite(path, b"two")  # no one is watching any more
        assert cache.get("/a.txt") is None

    asyncio.run(scenario())
