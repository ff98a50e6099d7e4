"""Finding the issuer and fetching its keys: OpenID discovery, then the JWK set.

GET `<authority>/.well-known/openid-configuration` gives `issuer` and `jwks_uri`; GET
`jwks_uri` gives the keys. The authority is the OpenFaaS gateway (`jwt_auth_local`: the
loopback address faasd's gateway listens on), or `jwt_auth_issuer_url`, ours, for tests and
for issuers elsewhere.

The GETs are a small asyncio client on httptools' response parser, not urllib in a thread:
a fetch that waits on a silent issuer is then cancelled at once when SIGTERM comes, instead
of holding the process's exit until a thread's timeout. HTTP_PROXY, HTTPS_PROXY and NO_PROXY
are followed as Go's default client follows them (`proxies.py`), and so are redirects (at most
MAX_REDIRECTS, as Go's client).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httptools

GATEWAY_AUTHORITY = "http://gateway.openfaas:8080"
LOCAL_AUTHORITY = "http://127.0.0.1:8000"
DISCOVERY_PATH = "/.well-known/openid-configuration"
# Longest one GET may take, connection included (Go's client: 10 s).
FETCH_TIMEOUT = 10.0
# Largest document accepted (Go reads at most 1 MiB).
MAX_DOCUMENT = 1 << 20
# Redirects followed for one GET (Go's default client stops after 10).
MAX_REDIRECTS = 10
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class IssuerError(Exception):
    """The issuer could not be reached or answered something we cannot use; one line."""


@dataclass(frozen=True)
class Discovery:
    """What discovery says: the issuer tokens must name (`iss`, `aud`) and where its keys are."""

    issuer: str
    jwks_uri: str


def authority_of(issuer_url: str, local: bool) -> str:
    """Where discovery starts: `jwt_auth_issuer_url` if set, else Go's choice."""
    if issuer_url:
        return issuer_url.rstrip("/")
    return LOCAL_AUTHORITY if local else GATEWAY_AUTHORITY


async def discover(authority: str, timeout: float = FETCH_TIMEOUT) -> Discovery:
    url = authority + DISCOVERY_PATH
    document = await fetch_json(url, timeout)
    issuer = document.get("issuer") if isinstance(document, dict) else None
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise IssuerError(f"{url}: no issuer in the discovery document")
    if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("http://", "https://")):
        raise IssuerError(f"{url}: no http(s) jwks_uri in the discovery document")
    return Discovery(issuer, jwks_uri)


async def fetch_json(url: str, timeout: float = FETCH_TIMEOUT) -> Any:
    """GET `url` and parse its JSON body; IssuerError naming the URL for anything else."""
    from urllib.parse import urljoin

    asked = url
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                status, body, location = await _get(url)
                if status not in REDIRECTS or location is None:
                    break
                url = urljoin(url, location)
            else:
                raise ValueError(f"stopped after {MAX_REDIRECTS} redirects (last to {url})")
    except TimeoutError:
        raise IssuerError(f"{asked}: no answer within {timeout:g}s") from None
    except (OSError, httptools.HttpParserError, ValueError) as error:
        raise IssuerError(f"{asked}: {error or type(error).__name__}") from None
    if status != 200:
        raise IssuerError(f"{url}: status {status}: {body[:200].decode(errors='replace')!r}")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise IssuerError(f"{url}: the answer is not JSON") from None


class _Response:
    """httptools' callbacks for one response: status, body bytes, done."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.done = False
        self.head_done = False
        self.framed = False  # Content-Length or chunked; else the body ends at the close
        self.location: str | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self.framed = True
        elif lowered == b"location" and self.location is None:
            self.location = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        # Raised here, httptools would report only "`on_body` callback error"; _get checks.
        if len(self.body) <= MAX_DOCUMENT:
            self.body += body

    def on_message_complete(self) -> None:
        self.done = True


async def _get(url: str) -> tuple[int, bytes, str | None]:
    """One GET: the status, the body and the Location field, if any."""
    from urllib.parse import urlsplit  # 0.8 MiB that only this needs (see config.py)

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    from fwatchdog.auth.proxies import proxy_for

    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    proxy = proxy_for(parts.scheme, parts.hostname, port)
    if proxy is None:
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=secure or None)
    else:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    extra = ""
    try:
        if proxy is not None and secure:
            await _tunnel(reader, writer, parts.hostname, port, proxy.authorization)
        elif proxy is not None:
            target = f"http://{host}{target}"  # absolute form: the proxy connects onwards
            if proxy.authorization is not None:
                extra = f"Proxy-Authorization: {proxy.authorization}\r\n"
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fwatchdog\r\n{extra}"
            "Accept: application/json\r\nConnection: close\r\n\r\n".encode()
        )
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.done:
            data = await reader.read(65536)
            if not data:
                # A close-delimited body ends here; anything else was cut short.
                if response.head_done and not response.framed:
                    break
                raise ValueError("connection closed before the whole answer")
            parser.feed_data(data)
            if len(response.body) > MAX_DOCUMENT:
                raise ValueError(f"answer larger than {MAX_DOCUMENT} bytes")
        return parser.get_status_code(), bytes(response.body), response.location
    finally:
        writer.close()


async def _tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    hostname: str,
    port: int,
    authorization: str | None,
) -> None:
    """CONNECT through the proxy, then TLS to `hostname` inside the tunnel."""
    import ssl

    login = "" if authorization is None else f"Proxy-Authorization: {authorization}\r\n"
    authority = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    writer.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{login}\r\n".encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ValueError(f"the proxy gave no answer to CONNECT {authority}") from None
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ")[1:2] != ["200"]:
        raise ValueError(f"the proxy refused CONNECT {authority}: {status_line}")
    await writer.start_tls(ssl.create_default_context(), server_hostname=hostname)
