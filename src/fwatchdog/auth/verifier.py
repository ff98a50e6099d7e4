"""Every check a function token must pass, against one issuer's key set, without I/O.

A token passes when its header names a key of the set (`kid`) and an asymmetric algorithm
that key's type signs, its signature verifies, `iss` is the issuer, `aud` contains the
issuer, `exp` (required), `nbf` and `iat` hold with LEEWAY, and its `function` claim lets
the caller invoke this function (patterns.py). Anything else is a 401, except a token that
is genuine but not for this function: 403.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning

from fwatchdog.auth.keys import ASYMMETRIC_ALGORITHMS, PublicKey
from fwatchdog.auth.outcome import FORBIDDEN, Denial, unauthorized
from fwatchdog.auth.patterns import may_invoke
from fwatchdog.telemetry.logs import Log

# Clock skew allowed on exp, nbf and iat, as Go's jwt.WithLeeway(1s).
LEEWAY = 1.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """A token's outcome: `denial` (None: accepted); for a genuine token (accepted or 403),
    `kid` and `expires_at` (exp + LEEWAY), how long the verdict holds; `unknown_kid`: the
    token names a key id the set lacks (a refresh of the set may find it)."""

    denial: Denial | None
    kid: str | None = None
    expires_at: float = 0.0
    unknown_kid: bool = False


def _failed(reason: str) -> Verdict:
    return Verdict(unauthorized(f"failed to verify JWT token: {reason}"))


MALFORMED = _failed("malformed token")
UNKNOWN_KID = Verdict(
    unauthorized("failed to verify JWT token: unknown key id (kid)"), None, 0.0, True
)


class Verifier:
    """Checks tokens for the function `function_ref` (`<namespace>:<name>`) against `issuer`
    and its `keys`; `clock` is seconds since the epoch (tests move it)."""

    def __init__(
        self,
        issuer: str,
        keys: Mapping[str, PublicKey],
        function_ref: str,
        log: Log | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.keys = keys
        self.function_ref = function_ref
        self._debug_log = log
        self._clock = clock

    def verify(self, token: str) -> Verdict:
        parts = token.split(".")
        if len(parts) != 3:
            return MALFORMED
        header = _json_segment(parts[0])
        if header is None:
            return MALFORMED
        alg, kid = header.get("alg"), header.get("kid")
        if self._debug_log is not None:
            self._debug_log.info(
                f"[JWT Auth] Token: kid: {str(kid)[:64]!r}\talg: {str(alg)[:16]!r}"
            )
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            # none and HS* among them: a public key must never serve as a shared secret.
            return _failed(f"signing algorithm {str(alg)[:16]!r} is not accepted")
        if not isinstance(kid, str):
            return _failed("no key id (kid) in the token's header")
        key = self.keys.get(kid)
        if key is None:
            return UNKNOWN_KID
        if alg not in key.algorithms:
            return _failed(f"signing algorithm {alg} does not fit key {kid!r} ({key.kty})")
        try:
            if alg == "EdDSA":
                # joserfc warns on every EdDSA token (RFC 9864 prefers the name Ed25519);
                # issuers still send EdDSA.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SecurityWarning)
                    payload = jws.deserialize_compact(token, key.key, algorithms=[alg]).payload
            else:
                payload = jws.deserialize_compact(token, key.key, algorithms=[alg]).payload
        except (JoseError, ValueError, TypeError):
            return _failed("signature does not verify")
        claims = _json_object(payload)
        if claims is None:
            return _failed("claims are not a JSON object")
        return self._check_claims(claims, kid)

    def _check_claims(self, claims: dict[str, Any], kid: str) -> Verdict:
        audience = claims.get("aud")
        if self._debug_log is not None:
            self._debug_log.info(
                f"[JWT Auth] Token: audience: {audience!r}\tissuer: {claims.get('iss')!r}"
            )
        now = self._clock()
        expiry = claims.get("exp")
        if not _is_number(expiry):
            return _failed("no expiry (exp)")
        if now > expiry + LEEWAY:
            return _failed("token has expired")
        for name, problem in (
            ("nbf", "token is not valid yet"),
            ("iat", "token used before issued"),
        ):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                return _failed(f"{name} is not a number")
            if now + LEEWAY < value:
                return _failed(problem)
        if claims.get("iss") != self.issuer:
            return _failed("token has invalid issuer")
        if not (
            audience == self.issuer or (isinstance(audience, list) and self.issuer in audience)
        ):
            return _failed("token has invalid audience")
        expires_at = float(expiry) + LEEWAY
        function = claims.get("function", {})
        if not isinstance(function, dict):
            return _failed("the function claim is not an object")
        permissions = function.get("permissions") or []
        allowed_audience = function.get("audience") or []
        if not (_is_text_list(permissions) and _is_text_list(allowed_audience)):
            return _failed("the function claim's permissions and audience must be lists of text")
        if not may_invoke(permissions, allowed_audience, self.function_ref):
            return Verdict(FORBIDDEN, kid, expires_at)
        return Verdict(None, kid, expires_at)


def _base64url(segment: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_segment(segment: str) -> dict[str, Any] | None:
    raw = _base64url(segment)
    return None if raw is None else _json_object(raw)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _is_number(value: Any) -> TypeGuard[float]:
    # json.loads reads NaN and Infinity: an exp of NaN would never compare as expired.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
