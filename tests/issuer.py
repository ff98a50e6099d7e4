"""A real OpenID issuer on loopback for jwt_auth tests, and the tokens it signs.

`Issuer` serves `/.well-known/openid-configuration` and its JWK set from a threaded
http.server on 127.0.0.1, with keys the test makes (RSA, EC, Ed25519). Its port is chosen
when it is made, so a watchdog can be pointed at it (`jwt_auth_issuer_url=issuer.url`)
before it starts (`start_late`); keys can be added and retired while it runs, and it can be
told to fail. It mints tokens signed with any of its keys, published or not, and the
forgeries the verifier must refuse (`alg: none`, HMAC keyed with a public key, a signature
from another key).

Use the `issuer` fixture by importing it into the test module (`from issuer import
issuer_fixture`): a tests/e2e/conftest.py would shadow tests/conftest.py, which the e2e
tests import as `conftest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

try:
    from conftest import free_port  # under pytest: a port no other fixture gets
except ImportError:  # the benchmarks

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


DEFAULT_ALGORITHMS = {"RSA": "RS256", "EC": "ES256", "Ed25519": "EdDSA"}
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token's text from its parts, signed or not: for forgeries."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


class Issuer:
    """An OpenID issuer on 127.0.0.1:`port`; `issuer` is what its tokens name in iss/aud
    (default: its own URL, as the OpenFaaS gateway does)."""

    def __init__(self, issuer: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.tls = tls  # serve https with this server context
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.issuer = issuer or self.url
        self.private: dict[str, RSAKey | ECKey | OKPKey] = {}
        self.algorithms: dict[str, str] = {}
        self.published: list[str] = []
        self.failing = 0  # answer this status to everything while non-zero
        self.requests: list[str] = []  # paths asked for, in order
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- keys --------------------------------------------------------------------------------

    def add_key(self, kind: str = "RSA", kid: str | None = None, publish: bool = True) -> str:
        """Make a key (RSA 2048, EC P-256 or Ed25519); publish it in the set unless told not."""
        key: RSAKey | ECKey | OKPKey
        if kind == "RSA":
            key = RSAKey.generate_key(2048)
        elif kind == "EC":
            key = ECKey.generate_key("P-256")
        elif kind == "Ed25519":
            key = OKPKey.generate_key("Ed25519")
        else:
            raise ValueError(kind)
        kid = kid or f"{kind.lower()}-{len(self.private) + 1}"
        with self._lock:
            self.private[kid] = key
            self.algorithms[kid] = DEFAULT_ALGORITHMS[kind]
            if publish:
                self.published.append(kid)
        return kid

    def publish(self, kid: str) -> None:
        with self._lock:
            if kid not in self.published:
                self.published.append(kid)

    def retire_key(self, kid: str) -> None:
        """Take a key out of the set (it can still sign: a retired key's tokens must fail)."""
        with self._lock:
            self.published.remove(kid)

    def public_jwk(self, kid: str) -> dict[str, Any]:
        jwk = dict(self.private[kid].as_dict(private=False))
        jwk.update(kid=kid, use="sig")
        return jwk

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [self.public_jwk(kid) for kid in self.published]}

    def fetches(self, path: str = JWKS_PATH) -> int:
        """How many times `path` was asked for."""
        with self._lock:
            return self.requests.count(path)

    # --- tokens ------------------------------------------------------------------------------

    def claims(
        self,
        permissions: list[str] | None = None,
        audience: list[str] | None = None,
        expires_in: float = 3600,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Claims as the OpenFaaS gateway writes them; `overrides` replace or add (None: drop)."""
        now = int(time.time())
        function: dict[str, Any] = {"permissions": ["*"] if permissions is None else permissions}
        if audience is not None:
            function["audience"] = audience
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [self.issuer],
            "sub": "test-client",
            "iat": now,
            "nbf": now,
            "exp": int(now + expires_in),
            "function": function,
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def mint(
        self,
        kid: str | None = None,
        claims: dict[str, Any] | None = None,
        header: dict[str, Any] | None = None,
        **claim_options: Any,
    ) -> str:
        """A token signed with `kid` (default: the first key): `claims` as given, or
        `self.claims(**claim_options)`; `header` adds to or replaces alg and kid."""
        kid = kid or next(iter(self.private))
        full_header = {"typ": "JWT", "alg": self.algorithms[kid], "kid": kid, **(header or {})}
        full_header = {name: value for name, value in full_header.items() if value is not None}
        payload = claims if claims is not None else self.claims(**claim_options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc: "EdDSA is deprecated via RFC 9864"
            return jwt.encode(
                full_header, payload, self.private[kid], algorithms=[full_header["alg"]]
            )

    def forge_none(self, kid: str | None = None, **claim_options: Any) -> str:
        """`alg: none`, no signature."""
        kid = kid or next(iter(self.private))
        return compact({"alg": "none", "kid": kid}, self.claims(**claim_options))

    def forge_hmac(self, kid: str | None = None, **claim_options: Any) -> str:
        """HS256 keyed with the public key as published (JSON and PEM both tried by attackers:
        this uses the PEM, the classic confusion)."""
        kid = kid or next(iter(self.private))
        header = {"alg": "HS256", "kid": kid, "typ": "JWT"}
        claims = self.claims(**claim_options)
        secret = self.private[kid].as_pem(private=False)
        head = b64url(json.dumps(header).encode())
        body = b64url(json.dumps(claims).encode())
        signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64url(signature)}"

    # --- serving -----------------------------------------------------------------------------

    def start(self) -> Issuer:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def start_late(self, delay: float) -> threading.Timer:
        """Start serving `delay` seconds from now, in the background."""
        timer = threading.Timer(delay, self.start)
        timer.daemon = True
        timer.start()
        return timer

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.url + JWKS_PATH}


def _handler_for(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with issuer._lock:
                issuer.requests.append(self.path)
            status, document = 200, None
            if issuer.failing:
                status = issuer.failing
            elif self.path == DISCOVERY_PATH:
                document = issuer.discovery()
            elif self.path == JWKS_PATH:
                document = issuer.jwks()
            else:
                status = 404
            body = json.dumps(document).encode() if document is not None else b"{}"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read what they need from `requests`

    return Handler


@pytest.fixture(name="issuer")
def issuer_fixture() -> Iterator[Issuer]:
    """A started issuer with one RSA key (`rsa-1`); stopped after the test."""
    issuer = Issuer()
    issuer.add_key("RSA", "rsa-1")
    issuer.start()
    yield issuer
    issuer.stop()


def benchmark_issuer() -> tuple[Issuer, str]:
    """A started issuer with one RSA key and an RS256 token valid for an hour that may invoke
    any function: for the benchmark's jwt_auth scenario (`jwt_auth_issuer_url=issuer.url`,
    any OPENFAAS_NAME/OPENFAAS_NAMESPACE). Stop the issuer afterwards."""
    issuer = Issuer()
    issuer.add_key("RSA", "bench-1")
    issuer.start()
    return issuer, issuer.mint("bench-1", expires_in=3600)
