"""process.find_on_path: the PATH lookup that replaces shutil.which (and its 0.6 MiB)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fwatchdog.process.spawn import find_on_path


def make(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_finds_the_first_executable_and_skips_directories_and_plain_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = (tmp_path / name for name in ("a", "b", "c"))
    for directory in (first, second, third):
        directory.mkdir()
    (first / "tool").mkdir()  # a directory of that name is not a command
    make(second / "tool", 0o644)  # nor is a file without the execute bit
    wanted = make(third / "tool", 0o755)
    monkeypatch.setenv("PATH", os.pathsep.join(map(str, (first, second, third))))
    assert find_on_path("tool") == str(wanted)
    assert find_on_path("tool") == shutil.which("tool")
    assert find_on_path("no-such-tool") is None


def test_agrees_with_shutil_on_the_real_path() -> None:
    for name in ("sh", "cat", "env", "no-such-command-anywhere"):
        assert find_on_path(name) == shutil.which(name)
