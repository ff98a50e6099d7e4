"""The environment a forked function sees: the watchdog's own plus the request's `Http_*`.

Names follow the Go of-watchdog: `Http_<Canonical_Header_Name>` (first value), `Http_Method`,
`Http_Path` (decoded), `Http_Query` (raw, only when non-empty).
"""

from __future__ import annotations

import os

from fwatchdog.http.request import Request


def canonical_header_name(name: str) -> str:
    """Go's textproto canonical form with dashes as underscores: `x-call-id` -> `X_Call_Id`."""
    return "_".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class EnvironmentBuilder:
    """Builds per-request environments on a copy of the watchdog's, taken once."""

    def __init__(self, base: dict[str, str] | None = None) -> None:
        self._base = dict(os.environ) if base is None else base
        self._names: dict[str, str] = {}

    def _env_name(self, header: str) -> str:
        name = self._names.get(header)
        if name is None:
            name = "Http_" + canonical_header_name(header)
            if len(self._names) < 4096:
                self._names[header] = name
        return name

    def build(self, request: Request) -> dict[str, str]:
        env = self._base.copy()
        seen: set[str] = set()
        for header, value in request.headers:
            name = self._env_name(header)
            if name not in seen:
                seen.add(name)
                env[name] = value
        env["Http_Method"] = request.method
        env["Http_Path"] = request.path
        if request.query:
            env["Http_Query"] = request.query
        return env
