"""jwt_auth through the real watchdog: a real issuer on loopback, real functions.

Every request but /_/health and /_/ready is checked, in every mode and every http_workers
process; a refused request gets the Denial's status, headers and body and never reaches the
function; an accepted one carries X-Auth-Seconds; the lock file is written only after the
keys were fetched; a request naming a key the issuer just added waits for the refresh and
passes; the issuer is reached through HTTP_PROXY as Go's client reaches it.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import (
    Watchdog,
    environment_of,
    function,
    health,
    http_mode_settings,
    read_until,
    wait_until,
)
from issuer import Issuer, issuer_fixture  # noqa: F401  (the `issuer` fixture)

Factory = Callable[..., Watchdog]
REF = {"OPENFAAS_NAME": "env", "OPENFAAS_NAMESPACE": "openfaas-fn"}
UNAUTHORIZED_HEADERS = {
    "WWW-Authenticate": "Bearer realm=IAM function invoke",
    "X-OpenFaaS-Internal": "faas-middleware",
}


def jwt_watchdog(factory: Factory, issuer: Issuer, wait_healthy: bool = True, **settings: str):
    watchdog = factory(jwt_auth="true", jwt_auth_issuer_url=issuer.url, **{**REF, **settings})
    if wait_healthy:
        assert wait_until(lambda: health(watchdog) == 200, 15), watchdog.log()
    return watchdog


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_request_without_token_gets_401_and_never_runs_the_function(
    watchdog_factory: Factory, issuer: Issuer, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess=f"touch {marker}")
    status, headers, body = watchdog.request("POST", "/", b"hi")
    assert status == 401
    assert body == b"Bearer must be present in Authorization header\n"
    for name, value in UNAUTHORIZED_HEADERS.items():
        assert headers[name] == value
    assert not marker.exists()
    assert "ACCESS DENIED" in watchdog.log()


def test_an_accepted_request_reaches_the_function_with_x_auth_seconds(
    watchdog_factory: Factory, issuer: Issuer
) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess="env")
    status, _, body = watchdog.request("GET", "/", headers=bearer(issuer.mint()))
    assert status == 200, body
    seconds = environment_of(body)["Http_X_Auth_Seconds"]
    assert 0 < float(seconds) < 1 and len(seconds.split(".")[1]) == 6


@pytest.mark.parametrize(
    ("make_token", "status", "reason"),
    [
        (lambda issuer: issuer.forge_none(), 401, b"failed to verify JWT token"),
        (lambda issuer: issuer.forge_hmac(), 401, b"failed to verify JWT token"),
        (lambda issuer: issuer.mint(iss="http://elsewhere"), 401, b"issuer"),
        (lambda issuer: issuer.mint(aud=["http://elsewhere"]), 401, b"audience"),
        (lambda issuer: issuer.mint(expires_in=-5), 401, b"expired"),
        (lambda issuer: issuer.mint(header={"kid": "nobody"}), 401, b"kid"),
        (lambda issuer: issuer.mint(permissions=["other:*"]), 403, b"insufficient permissions"),
        (lambda issuer: issuer.mint(audience=["openfaas-fn:other"]), 403, b"insufficient"),
    ],
)
def test_bad_tokens_are_refused(
    watchdog_factory: Factory,
    issuer: Issuer,
    make_token: Callable[[Issuer], str],
    status: int,
    reason: bytes,
) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess="env")
    got, headers, body = watchdog.request("GET", "/", headers=bearer(make_token(issuer)))
    assert (got, reason in body) == (status, True), body
    assert headers["X-OpenFaaS-Internal"] == "faas-middleware"
    assert b"Http_" not in body


@pytest.mark.parametrize("pattern", ["*", "openfaas-fn:*", "openfaas-fn:env", "open*:e*v"])
def test_permission_patterns_are_honoured(
    watchdog_factory: Factory, issuer: Issuer, pattern: str
) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess="env")
    token = issuer.mint(permissions=[pattern])
    assert watchdog.request("GET", "/", headers=bearer(token))[0] == 200


def test_probes_need_no_token(watchdog_factory: Factory, issuer: Issuer) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess="cat")
    assert watchdog.request("GET", "/_/health")[0] == 200
    assert watchdog.request("GET", "/_/ready")[0] == 200


def test_health_waits_for_a_late_issuer(watchdog_factory: Factory) -> None:
    late = Issuer()
    late.add_key("RSA", "rsa-1")
    try:
        watchdog = jwt_watchdog(watchdog_factory, late, wait_healthy=False, fprocess="env")
        watchdog.wait_for_log("waiting for the issuer", timeout=10)
        assert health(watchdog) == 503
        assert not watchdog.lock_path.exists()
        late.start()
        assert wait_until(lambda: health(watchdog) == 200, 15), watchdog.log()
        assert watchdog.request("GET", "/", headers=bearer(late.mint()))[0] == 200
    finally:
        late.stop()


def test_a_key_added_later_is_accepted_at_once_and_a_retired_one_refused(
    watchdog_factory: Factory, issuer: Issuer
) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, fprocess="env", jwt_auth_key_refresh="1s")
    new_kid = issuer.add_key("EC", "ec-2")
    assert watchdog.request("GET", "/", headers=bearer(issuer.mint(new_kid)))[0] == 200
    old_token = issuer.mint("rsa-1")
    assert watchdog.request("GET", "/", headers=bearer(old_token))[0] == 200
    issuer.retire_key("rsa-1")
    assert wait_until(lambda: watchdog.request("GET", "/", headers=bearer(old_token))[0] == 401, 10)


def test_the_start_fails_without_the_function_s_name(watchdog_factory: Factory) -> None:
    watchdog = watchdog_factory(
        wait=False, fprocess="cat", jwt_auth="true", OPENFAAS_NAMESPACE="openfaas-fn"
    )
    assert watchdog.process.wait(10) != 0
    assert "OPENFAAS_NAME" in watchdog.log()


@pytest.mark.parametrize("mode", ["streaming", "serializing", "static", "afterburn", "http"])
def test_every_mode_refuses_a_request_without_token(
    watchdog_factory: Factory, issuer: Issuer, mode: str, tmp_path: Path
) -> None:
    settings: dict[str, str] = {"mode": mode, "fprocess": "cat"}
    if mode == "static":
        (tmp_path / "index.html").write_text("secret\n")
        settings["static_path"] = str(tmp_path)
    elif mode == "afterburn":
        settings["fprocess"] = f"{sys.executable} {function('ab_lib_serve.py')}"
    elif mode == "http":
        settings = http_mode_settings()
    watchdog = jwt_watchdog(watchdog_factory, issuer, **settings)
    for _ in range(3):  # the same request again: the lanes that remember requests too
        status, _, body = watchdog.request("GET", "/")
        assert status == 401 and b"secret" not in body
    assert watchdog.request("GET", "/", headers=bearer(issuer.mint()))[0] in (200, 404)


def _count_of(watchdog: Watchdog, issuer: Issuer) -> int:
    status, _, body = watchdog.request("GET", "/count", headers=bearer(issuer.mint()))
    assert status == 200
    return int(body)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http_mode_upstream_never_sees_an_unauthenticated_request(
    watchdog_factory: Factory, issuer: Issuer, workers: str
) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, **http_mode_settings(http_workers=workers))
    token = issuer.mint()
    valid = f"GET /count HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    anonymous = b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n"
    closing = b"GET /count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    forged = (
        f"GET /count HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {issuer.forge_none()}\r\n\r\n"
    ).encode()
    sent_valid = 0
    # Fresh connections, each request alone.
    for _ in range(5):
        assert watchdog.raw(closing).startswith(b"HTTP/1.1 401 ")
        forged_closing = forged.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        assert watchdog.raw(forged_closing).startswith(b"HTTP/1.1 401 ")
    # One warm keep-alive connection: valid and refused requests, each identical to one
    # before it, so the lanes that remember a request's bytes are tried too.
    with socket.create_connection(("127.0.0.1", watchdog.port), timeout=5) as sock:
        for request in [valid, anonymous, valid, anonymous, forged, valid, forged, anonymous]:
            sock.sendall(request)
            head = read_until(sock, b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n")[0])
            rest = head.split(b"\r\n\r\n", 1)[1]
            while len(rest) < length:
                rest += sock.recv(65536)
            if request is valid:
                sent_valid += 1
                assert status == b"200", head
            else:
                assert status == b"401", head
    time.sleep(0.1)
    # The next count is the upstream's: only the valid requests (and this one) reached it.
    assert _count_of(watchdog, issuer) == sent_valid + 1


def test_http_mode_upstream_sees_x_auth_seconds(watchdog_factory: Factory, issuer: Issuer) -> None:
    watchdog = jwt_watchdog(watchdog_factory, issuer, **http_mode_settings())
    for _ in range(2):  # the second is identical: the lanes that remember requests
        status, _, body = watchdog.request("GET", "/echo", headers=bearer(issuer.mint(sub="a")))
        assert status == 200
        headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
        assert float(headers["x-auth-seconds"]) < 1
        assert headers["authorization"].startswith("Bearer ")


class _ForwardProxy(socketserver.ThreadingTCPServer):
    """A plain HTTP forward proxy to one upstream: notes each request line and its
    Proxy-Authorization, passes the request on in origin form, the answer back as it comes."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[tuple[str, str | None]] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(socketserver.StreamRequestHandler):
    server: _ForwardProxy

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                return
            head += line
        request_line, *fields = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        login = next(
            (f.split(":", 1)[1].strip() for f in fields if f.lower().startswith("proxy-auth")),
            None,
        )
        self.server.seen.append((request_line, login))
        if method == "CONNECT":
            self._tunnel()
            return
        path = "/" + target.split("://", 1)[1].split("/", 1)[1]
        kept = [f for f in fields if f and not f.lower().startswith("proxy-")]
        with socket.create_connection(("127.0.0.1", self.server.upstream_port)) as upstream:
            upstream.sendall(
                "\r\n".join([f"{method} {path} {version}", *kept, "", ""]).encode("latin-1")
            )
            while chunk := upstream.recv(65536):
                self.wfile.write(chunk)

    def _tunnel(self) -> None:
        with socket.create_connection(("127.0.0.1", self.server.upstream_port)) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            pending = self.rfile.peek() if hasattr(self.rfile, "peek") else b""
            if pending:
                upstream.sendall(self.rfile.read(len(pending)))
            client = self.connection
            sockets = [client, upstream]
            while True:
                ready, _, _ = select.select(sockets, [], [], 10)
                if not ready:
                    return
                for source in ready:
                    chunk = source.recv(65536)
                    if not chunk:
                        return
                    (upstream if source is client else client).sendall(chunk)


@contextmanager
def _forward_proxy(upstream_port: int) -> Iterator[_ForwardProxy]:
    proxy = _ForwardProxy(upstream_port)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def _serves_through_proxy(factory: Factory, issuer: Issuer, **settings: str) -> None:
    """A jwt_auth watchdog with these settings becomes healthy and serves a token's request."""
    watchdog = factory(fprocess="cat", jwt_auth="true", **settings, **REF)
    assert wait_until(lambda: health(watchdog) == 200, 15), watchdog.log()
    assert watchdog.request("POST", "/", b"hi", bearer(issuer.mint()))[:3:2] == (200, b"hi")


def test_the_issuer_is_reached_through_http_proxy_as_go_s_client_does(
    watchdog_factory: Factory, issuer: Issuer
) -> None:
    with _forward_proxy(issuer.port) as proxy:
        # A name only the proxy can reach; NO_PROXY lists others; the keys' URL (127.0.0.1)
        # is loopback, which Go never proxies.
        _serves_through_proxy(
            watchdog_factory,
            issuer,
            jwt_auth_issuer_url=f"http://issuer.invalid:{issuer.port}",
            HTTP_PROXY=f"http://fn:s%40cret@127.0.0.1:{proxy.server_address[1]}",
            NO_PROXY="gateway.openfaas,.example.com,10.0.0.0/8",
        )
        discovery = f"GET http://issuer.invalid:{issuer.port}/.well-known/openid-configuration"
        assert proxy.seen == [(f"{discovery} HTTP/1.1", "Basic Zm46c0BjcmV0")]  # fn:s@cret


def _self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for issuer.invalid and 127.0.0.1 that is its own CA: its file (for the
    watchdog's SSL_CERT_FILE) and a server context serving it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.invalid")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("issuer.invalid"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "issuer.pem", directory / "issuer.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return cert_file, context


def test_an_https_issuer_is_reached_through_https_proxy_by_connect(
    watchdog_factory: Factory, tmp_path: Path
) -> None:
    cert_file, context = _self_signed(tmp_path)
    issuer = Issuer(tls=context)
    issuer.add_key("RSA", "rsa-1")
    issuer.start()
    try:
        with _forward_proxy(issuer.port) as proxy:
            _serves_through_proxy(
                watchdog_factory,
                issuer,
                jwt_auth_issuer_url=f"https://issuer.invalid:{issuer.port}",
                HTTPS_PROXY=f"127.0.0.1:{proxy.server_address[1]}",
                SSL_CERT_FILE=str(cert_file),
            )
            authority = f"issuer.invalid:{issuer.port}"
            assert proxy.seen == [(f"CONNECT {authority} HTTP/1.1", None)]
            assert issuer.requests[0] == "/.well-known/openid-configuration"  # in the tunnel
    finally:
        issuer.stop()
