"""HTTP_PROXY, HTTPS_PROXY and NO_PROXY for the issuer's GETs, read as Go reads them.

The Go watchdog fetches the issuer's documents with Go's default client, which goes through
`http.ProxyFromEnvironment`; a cluster that sets these variables expects the watchdog to
follow them. Go's rules (golang.org/x/net/http/httpproxy): the upper-case name wins over the
lower-case one; a proxy without a scheme is `http://`; `localhost` and loopback addresses are
never proxied; NO_PROXY is a comma-separated list of `*`, IP addresses, CIDR ranges and
domain names (`example.com` matches it and its subdomains, `.example.com` and
`*.example.com` only the subdomains), each with an optional `:port`.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Proxy:
    """Where to connect instead, and the Proxy-Authorization its URL carries (if any)."""

    host: str
    port: int
    authorization: str | None


def _variable(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.upper()) or environ.get(name.lower()) or ""


def proxy_for(
    scheme: str, host: str, port: int, environ: Mapping[str, str] = os.environ
) -> Proxy | None:
    """The proxy a GET of `scheme://host:port` goes through, or None to connect directly."""
    text = _variable(environ, f"{scheme}_proxy").strip()
    if not text or not _uses_proxy(host.lower(), port, _variable(environ, "no_proxy")):
        return None
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{scheme.upper()}_PROXY={text}: fwatchdog reaches proxies over http://")
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


def _uses_proxy(host: str, port: int, no_proxy: str) -> bool:
    if host == "localhost":
        return False
    address = _address(host)
    if address is not None and address.is_loopback:
        return False
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        if "/" in entry:  # a CIDR range
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return False
            except ValueError:
                pass
            continue
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        entry_address = _address(name)
        if entry_address is not None:
            if address == entry_address:
                return False
            continue
        if name.startswith("*."):
            name = name[1:]
        if name.startswith("."):
            if host.endswith(name):
                return False
        elif host == name or host.endswith("." + name):
            return False
    return True


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None]:
    """`name:port` (or `[v6]:port`) into its parts; a bare IPv6 address has no port."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        return name, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    name, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name, int(port)
    return entry, None
