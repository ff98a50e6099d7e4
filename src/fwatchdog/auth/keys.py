"""A JWK set (RFC 7517) as the verifier uses it: public keys by key id, each with the
signing algorithms its type allows.

Only asymmetric keys are kept (RSA, EC, OKP): a symmetric ("oct") key in the set would let
anyone who can read the set, which is public, sign tokens. Each key accepts only the
algorithms of its own type, so a token cannot choose HMAC with an RSA key's bytes as the
secret, or an ES384 signature over a P-256 key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# Each EC curve has exactly one ES algorithm (RFC 7518 3.4).
EC_ALGORITHMS = {
    "P-256": frozenset({"ES256"}),
    "P-384": frozenset({"ES384"}),
    "P-521": frozenset({"ES512"}),
}
# EdDSA is what issuers send today; Ed25519 and Ed448 are its fully specified names (RFC 9864).
OKP_ALGORITHMS = {
    "Ed25519": frozenset({"EdDSA", "Ed25519"}),
    "Ed448": frozenset({"EdDSA", "Ed448"}),
}
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS.union(*EC_ALGORITHMS.values(), *OKP_ALGORITHMS.values())

# Private members a careless issuer might publish; a verifier needs none of them.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


@dataclass(frozen=True)
class PublicKey:
    """One key of the set: its id, type, the algorithms it verifies, the joserfc key."""

    kid: str
    kty: str
    algorithms: frozenset[str]
    key: RSAKey | ECKey | OKPKey
    # The public members as canonical JSON: a kid whose key material changed is a new key.
    material: str


def parse_key_set(document: Any) -> tuple[dict[str, PublicKey], list[str]]:
    """The usable keys of a JWK set document by kid, and why each other entry was skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWK set (a JSON object with a "keys" list)')
    keys: dict[str, PublicKey] = {}
    skipped: list[str] = []
    for entry in document["keys"]:
        try:
            key = _public_key(entry)
        except (ValueError, TypeError, KeyError, JoseError) as error:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            skipped.append(f"key {kid!r}: {error}")
            continue
        if key.kid in keys:
            skipped.append(f"key {key.kid!r}: the set names this kid twice; the first is used")
            continue
        keys[key.kid] = key
    return keys, skipped


def _public_key(entry: Any) -> PublicKey:
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid; tokens name their key by kid")
    if entry.get("use", "sig") != "sig":
        raise ValueError(f"use is {entry['use']!r}, not sig")
    public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
    kty = entry.get("kty")
    key: RSAKey | ECKey | OKPKey
    if kty == "RSA":
        algorithms = RSA_ALGORITHMS
        key = RSAKey.import_key(public)
    elif kty == "EC":
        algorithms = EC_ALGORITHMS.get(entry.get("crv", ""), frozenset())
        key = ECKey.import_key(public)
    elif kty == "OKP":
        algorithms = OKP_ALGORITHMS.get(entry.get("crv", ""), frozenset())
        key = OKPKey.import_key(public)
    else:
        raise ValueError(f"kty {kty!r} is not an asymmetric signing key (RSA, EC, OKP)")
    if not algorithms:
        raise ValueError(f"curve {entry.get('crv')!r} signs no algorithm we accept")
    alg = entry.get("alg")
    if alg is not None:
        # A key that names its algorithm verifies that one only (RFC 7517 4.4).
        if alg not in algorithms:
            raise ValueError(f"alg {alg!r} does not fit a {kty} key")
        algorithms = frozenset({alg})
    return PublicKey(kid, kty, algorithms, key, json.dumps(public, sort_keys=True))
