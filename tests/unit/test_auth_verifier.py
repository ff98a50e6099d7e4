"""Token checks against a key set made by the test: what passes, and each way to fail."""

from __future__ import annotations

import time

import pytest
from issuer import Issuer, compact

from fwatchdog.auth.keys import parse_key_set
from fwatchdog.auth.verifier import LEEWAY, Verifier

REF = "openfaas-fn:env"


@pytest.fixture(scope="module")
def keys_issuer() -> Issuer:
    """One key of each type (not served: the verifier does no I/O)."""
    issuer = Issuer("https://gw.example.com")
    issuer.add_key("RSA", "rsa-1")
    issuer.add_key("EC", "ec-1")
    issuer.add_key("Ed25519", "ed-1")
    return issuer


def verifier_for(issuer: Issuer, now: float | None = None, ref: str = REF) -> Verifier:
    keys, skipped = parse_key_set(issuer.jwks())
    assert not skipped
    clock = time.time if now is None else (lambda: now)
    return Verifier(issuer.issuer, keys, ref, clock=clock)


def reason(verifier: Verifier, token: str) -> str:
    verdict = verifier.verify(token)
    assert verdict.denial is not None, "token was accepted"
    assert verdict.denial.status == 401
    assert ("WWW-Authenticate", "Bearer realm=IAM function invoke") in verdict.denial.headers
    assert ("X-OpenFaaS-Internal", "faas-middleware") in verdict.denial.headers
    return verdict.denial.reason


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_a_token_from_each_key_type_is_accepted(keys_issuer: Issuer, kid: str) -> None:
    verdict = verifier_for(keys_issuer).verify(keys_issuer.mint(kid))
    assert verdict.denial is None
    assert verdict.kid == kid
    assert verdict.expires_at == pytest.approx(time.time() + 3600 + LEEWAY, abs=5)


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS512"])
def test_rsa_keys_verify_every_rsa_algorithm(keys_issuer: Issuer, alg: str) -> None:
    token = keys_issuer.mint("rsa-1", header={"alg": alg})
    assert verifier_for(keys_issuer).verify(token).denial is None


def test_a_token_naming_a_key_not_in_the_set_is_unknown(keys_issuer: Issuer) -> None:
    verdict = verifier_for(keys_issuer).verify(keys_issuer.mint("rsa-1", header={"kid": "new"}))
    assert verdict.unknown_kid
    assert verdict.denial is not None and verdict.denial.status == 401


def test_a_token_without_kid_is_refused(keys_issuer: Issuer) -> None:
    token = keys_issuer.mint("rsa-1", header={"kid": None})
    assert "kid" in reason(verifier_for(keys_issuer), token)


def test_a_signature_by_another_key_under_a_known_kid_is_refused(keys_issuer: Issuer) -> None:
    other = Issuer(keys_issuer.issuer)
    other.add_key("RSA", "rsa-1")  # same kid, another private key
    assert "signature" in reason(verifier_for(keys_issuer), other.mint("rsa-1"))


def test_changed_claims_under_a_genuine_signature_are_refused(keys_issuer: Issuer) -> None:
    head, _, signature = keys_issuer.mint("rsa-1", permissions=["other:*"]).split(".")
    forged_body = compact({}, keys_issuer.claims(permissions=["*"])).split(".")[1]
    token = f"{head}.{forged_body}.{signature}"
    assert "signature" in reason(verifier_for(keys_issuer), token)


def test_alg_none_is_refused(keys_issuer: Issuer) -> None:
    assert "'none' is not accepted" in reason(
        verifier_for(keys_issuer), keys_issuer.forge_none("rsa-1")
    )


def test_hmac_keyed_with_the_public_key_is_refused(keys_issuer: Issuer) -> None:
    assert "'HS256' is not accepted" in reason(
        verifier_for(keys_issuer), keys_issuer.forge_hmac("rsa-1")
    )


@pytest.mark.parametrize(
    ("kid", "alg"), [("rsa-1", "ES256"), ("ec-1", "RS256"), ("ec-1", "ES384"), ("ed-1", "PS256")]
)
def test_an_algorithm_of_another_key_type_is_refused(
    keys_issuer: Issuer, kid: str, alg: str
) -> None:
    # Signed honestly with the named key's own algorithm, then relabelled.
    _, body, signature = keys_issuer.mint(kid).split(".")
    relabelled = compact({"alg": alg, "kid": kid}, {}).split(".")[0]
    token = f"{relabelled}.{body}.{signature}"
    assert "does not fit" in reason(verifier_for(keys_issuer), token)


def test_expiry_is_checked_with_one_second_of_leeway(keys_issuer: Issuer) -> None:
    token = keys_issuer.mint("rsa-1", expires_in=60)
    expiry = keys_issuer.claims(expires_in=60)["exp"]
    assert verifier_for(keys_issuer, now=expiry + 0.9).verify(token).denial is None
    assert "expired" in reason(verifier_for(keys_issuer, now=expiry + 1.1), token)


def test_a_token_without_expiry_is_refused(keys_issuer: Issuer) -> None:
    assert "exp" in reason(verifier_for(keys_issuer), keys_issuer.mint("rsa-1", exp=None))


def test_a_token_with_nan_expiry_is_refused(keys_issuer: Issuer) -> None:
    claims = keys_issuer.claims()
    claims["exp"] = float("nan")  # json.dumps writes NaN, json.loads reads it back
    assert "exp" in reason(verifier_for(keys_issuer), keys_issuer.mint("rsa-1", claims=claims))


def test_not_before_and_issued_at_are_checked_with_leeway(keys_issuer: Issuer) -> None:
    now = time.time()
    later = int(now) + 30
    assert "not valid yet" in reason(
        verifier_for(keys_issuer, now), keys_issuer.mint("rsa-1", nbf=later)
    )
    assert "before issued" in reason(
        verifier_for(keys_issuer, now), keys_issuer.mint("rsa-1", iat=later, nbf=None)
    )
    token = keys_issuer.mint("rsa-1", nbf=later, iat=later)
    assert verifier_for(keys_issuer, later - 0.9).verify(token).denial is None


def test_a_wrong_issuer_is_refused(keys_issuer: Issuer) -> None:
    token = keys_issuer.mint("rsa-1", iss="https://evil.example.com")
    assert "issuer" in reason(verifier_for(keys_issuer), token)


@pytest.mark.parametrize(
    "aud", [["https://other.example.com"], [], "https://other.example.com", None]
)
def test_an_audience_without_the_issuer_is_refused(keys_issuer: Issuer, aud: object) -> None:
    token = keys_issuer.mint("rsa-1", aud=aud)
    assert "audience" in reason(verifier_for(keys_issuer), token)


def test_an_audience_given_as_one_string_is_accepted(keys_issuer: Issuer) -> None:
    token = keys_issuer.mint("rsa-1", aud=keys_issuer.issuer)
    assert verifier_for(keys_issuer).verify(token).denial is None


@pytest.mark.parametrize(
    ("permissions", "audience", "status"),
    [
        (["*"], None, None),
        (["openfaas-fn:*"], None, None),
        (["openfaas-fn:env"], [], None),
        (["openfaas*:env"], ["openfaas-fn:*"], None),
        (["other:*"], None, 403),
        ([], None, 403),
        (["*"], ["other:env"], 403),
        (["openfaas-fn"], None, 403),
    ],
)
def test_the_function_claim_decides_between_accepted_and_403(
    keys_issuer: Issuer, permissions: list[str], audience: list[str] | None, status: int | None
) -> None:
    token = keys_issuer.mint("rsa-1", permissions=permissions, audience=audience)
    verdict = verifier_for(keys_issuer).verify(token)
    if status is None:
        assert verdict.denial is None
    else:
        assert verdict.denial is not None
        assert (verdict.denial.status, verdict.denial.reason) == (403, "insufficient permissions")
        assert verdict.denial.body == b"insufficient permissions\n"
        assert ("X-OpenFaaS-Internal", "faas-middleware") in verdict.denial.headers
        assert verdict.kid == "rsa-1"  # genuine: the verdict may be remembered


def test_a_token_without_function_claim_is_forbidden(keys_issuer: Issuer) -> None:
    verdict = verifier_for(keys_issuer).verify(keys_issuer.mint("rsa-1", function=None))
    assert verdict.denial is not None and verdict.denial.status == 403


def test_a_malformed_function_claim_is_refused(keys_issuer: Issuer) -> None:
    token = keys_issuer.mint("rsa-1", function={"permissions": "*"})
    assert "function claim" in reason(verifier_for(keys_issuer), token)


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.", "W10.e30.", "bnVsbA.e30."]
)
def test_malformed_tokens_are_refused(keys_issuer: Issuer, token: str) -> None:
    reason(verifier_for(keys_issuer), token)


def test_a_key_set_keeps_only_asymmetric_signing_keys_with_kids(keys_issuer: Issuer) -> None:
    document = keys_issuer.jwks()
    document["keys"] += [
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
        {**keys_issuer.public_jwk("rsa-1"), "kid": "enc", "use": "enc"},
        {**keys_issuer.public_jwk("rsa-1"), "kid": None},
        {**keys_issuer.public_jwk("ec-1"), "kid": "ec-alg", "alg": "RS256"},
        "not a key",
    ]
    keys, skipped = parse_key_set(document)
    assert sorted(keys) == ["ec-1", "ed-1", "rsa-1"]
    assert len(skipped) == 5


def test_a_key_that_names_its_algorithm_verifies_only_that_one(keys_issuer: Issuer) -> None:
    document = {"keys": [{**keys_issuer.public_jwk("rsa-1"), "alg": "RS256"}]}
    keys, _ = parse_key_set(document)
    verifier = Verifier(keys_issuer.issuer, keys, REF)
    assert verifier.verify(keys_issuer.mint("rsa-1")).denial is None
    assert "does not fit" in reason(verifier, keys_issuer.mint("rsa-1", header={"alg": "PS256"}))
