"""The Authenticator against a real issuer on loopback: start (also late), check, remember,
key rotation, and the answers Go's faas-middleware gives."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from issuer import Issuer, issuer_fixture  # noqa: F401  (the `issuer` fixture)

from fwatchdog.auth import Authenticator
from fwatchdog.auth.issuer import GATEWAY_AUTHORITY, LOCAL_AUTHORITY, authority_of
from fwatchdog.auth.outcome import NO_BEARER
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.logs import Log

CONFIG = replace(Config(), jwt_auth=True, openfaas_name="env", openfaas_namespace="openfaas-fn")


def make(issuer: Issuer, **options: object) -> tuple[Authenticator, io.StringIO]:
    stream = io.StringIO()
    config = replace(CONFIG, jwt_auth_issuer_url=issuer.url)
    if "debug" in options:
        config = replace(config, jwt_auth_debug=bool(options.pop("debug")))
    return Authenticator(config, Log(stream=stream), **options), stream  # type: ignore[arg-type]


def run(test: Callable[[], object]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_authority_is_the_gateway_or_loopback_or_ours() -> None:
    assert authority_of("", False) == GATEWAY_AUTHORITY == "http://gateway.openfaas:8080"
    assert authority_of("", True) == LOCAL_AUTHORITY == "http://127.0.0.1:8000"
    assert authority_of("http://127.0.0.1:9/", True) == "http://127.0.0.1:9"


def test_a_valid_token_is_accepted_and_timed(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        try:
            result = auth.check(bearer(issuer.mint()))
            assert result.accepted and result.denial is None
            assert 0 < result.seconds < 1
            assert float(result.x_auth_seconds) == pytest.approx(result.seconds, abs=1e-6)
            assert len(result.x_auth_seconds.split(".")[1]) == 6
        finally:
            await auth.stop()

    run(test)


@pytest.mark.parametrize("authorization", [None, "", "Bearer ", "Bearer    ", "Basic dXNlcjpw"])
def test_a_request_without_bearer_token_gets_go_s_401(
    issuer: Issuer, authorization: str | None
) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        result = auth.check(authorization)
        assert result.denial is NO_BEARER
        assert result.denial.status == 401
        assert result.denial.body == b"Bearer must be present in Authorization header\n"
        assert dict(result.denial.headers) == {
            "WWW-Authenticate": "Bearer realm=IAM function invoke",
            "X-OpenFaaS-Internal": "faas-middleware",
            "Content-Type": "text/plain; charset=utf-8",
            "X-Content-Type-Options": "nosniff",
        }
        await auth.stop()

    run(test)


def test_the_scheme_is_read_in_any_case(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        assert auth.check(f"bearer  {issuer.mint()} ").accepted
        await auth.stop()

    run(test)


def test_a_verdict_is_remembered_until_the_token_expires(issuer: Issuer) -> None:
    now = [time.time()]

    async def test() -> None:
        auth, _ = make(issuer, clock=lambda: now[0])
        await auth.start()
        token = issuer.mint(expires_in=60)
        forbidden = issuer.mint(permissions=["other:*"])
        assert auth.check(bearer(token)).accepted
        assert auth.check(bearer(forbidden)).denial.status == 403  # type: ignore[union-attr]
        assert len(auth._remembered) == 2
        # Remembered: answered without the verifier (which would refuse a token now).
        verifier, auth._verifier = auth._verifier, None
        assert auth.check(bearer(token)).accepted
        assert auth.check(bearer(forbidden)).denial.status == 403  # type: ignore[union-attr]
        auth._verifier = verifier
        now[0] += 62  # past exp + leeway
        result = auth.check(bearer(token))
        assert result.denial is not None and "expired" in result.denial.reason
        await auth.stop()

    run(test)


def test_refused_tokens_are_not_remembered(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        for token in (issuer.forge_none(), issuer.forge_hmac(), issuer.mint(iss="x")):
            assert auth.check(bearer(token)).denial.status == 401  # type: ignore[union-attr]
        assert len(auth._remembered) == 0
        await auth.stop()

    run(test)


def test_a_new_key_is_fetched_when_a_token_names_it(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        fetched = issuer.fetches()
        new_kid = issuer.add_key("EC", "ec-new")
        token = bearer(issuer.mint(new_kid))
        first = auth.check(token)
        assert first.denial is not None and first.denial.status == 401
        assert first.unknown_key  # a refresh is under way
        result = await auth.check_waiting(token)
        assert result.accepted and not result.unknown_key
        assert issuer.fetches() == fetched + 1
        assert auth.check(token).accepted
        await auth.stop()

    run(test)


def test_check_waiting_lets_the_first_request_with_a_new_key_pass(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer)
        await auth.start()
        token = bearer(issuer.mint(issuer.add_key("Ed25519", "ed-new")))
        assert (await auth.check_waiting(token)).accepted
        await auth.stop()

    run(test)


def test_made_up_key_ids_cost_the_issuer_one_fetch_per_gap(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer, unknown_kid_refresh_gap=60.0)
        await auth.start()
        fetched = issuer.fetches()
        for number in range(200):
            token = bearer(issuer.mint(header={"kid": f"made-up-{number}"}))
            result = await auth.check_waiting(token)
            assert result.denial is not None and result.denial.status == 401
        assert issuer.fetches() == fetched + 1
        await auth.stop()

    run(test)


def test_a_retired_key_stops_being_accepted_on_the_timer(issuer: Issuer) -> None:
    async def test() -> None:
        auth, log = make(issuer, key_set_max_age=0.2)
        issuer.add_key("RSA", "rsa-2")
        await auth.start()
        old, new = bearer(issuer.mint("rsa-1")), bearer(issuer.mint("rsa-2"))
        assert auth.check(old).accepted and auth.check(new).accepted
        issuer.retire_key("rsa-1")
        deadline = time.monotonic() + 10
        while "rsa-1" in auth.key_ids and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert auth.key_ids == ["rsa-2"]
        result = auth.check(old)  # remembered as accepted before: forgotten with its key
        assert result.denial is not None and result.denial.status == 401
        assert auth.check(new).accepted
        assert "could not refresh" not in log.getvalue()
        await auth.stop()

    run(test)


def test_a_key_replaced_under_the_same_kid_voids_its_verdicts(issuer: Issuer) -> None:
    async def test() -> None:
        auth, _ = make(issuer, key_set_max_age=0.2)
        await auth.start()
        token = bearer(issuer.mint("rsa-1"))
        assert auth.check(token).accepted
        issuer.retire_key("rsa-1")
        issuer.add_key("RSA", "rsa-1")  # same kid, new key material
        deadline = time.monotonic() + 10
        while len(auth._remembered) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert auth.check(token).denial is not None
        assert auth.check(bearer(issuer.mint("rsa-1"))).accepted
        await auth.stop()

    run(test)


def test_a_failed_refresh_keeps_the_keys(issuer: Issuer) -> None:
    async def test() -> None:
        auth, log = make(issuer, key_set_max_age=0.2)
        await auth.start()
        issuer.failing = 500
        token = bearer(issuer.mint())
        wait_until = time.monotonic() + 10
        while "could not refresh" not in log.getvalue() and time.monotonic() < wait_until:
            await asyncio.sleep(0.05)
        assert "could not refresh the issuer's keys (timer)" in log.getvalue()
        assert "status 500" in log.getvalue()
        assert auth.check(token).accepted
        await auth.stop()

    run(test)


def test_start_waits_for_a_late_issuer_and_says_so() -> None:
    late = Issuer()
    late.add_key("RSA", "rsa-1")

    async def test() -> None:
        auth, log = make(late)
        assert auth.check(bearer(late.mint())).denial.status == 503  # type: ignore[union-attr]
        late.start_late(0.8)
        started = time.monotonic()
        await asyncio.wait_for(auth.start(), 20)
        assert time.monotonic() - started >= 0.7
        assert "jwt_auth: waiting for the issuer" in log.getvalue()
        assert late.url in log.getvalue()
        assert "jwt_auth: keys loaded from the issuer" in log.getvalue()
        assert auth.check(bearer(late.mint())).accepted
        await auth.stop()

    try:
        run(test)
    finally:
        late.stop()


def test_start_waits_while_the_set_has_no_usable_key(issuer: Issuer) -> None:
    issuer.retire_key("rsa-1")

    async def test() -> None:
        auth, log = make(issuer)
        task = asyncio.create_task(auth.start())
        await asyncio.sleep(0.5)
        assert not task.done()
        assert "no key we can verify tokens with" in log.getvalue()
        issuer.publish("rsa-1")
        await asyncio.wait_for(task, 20)
        await auth.stop()

    run(test)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listener that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_start_gives_up_at_once_when_cancelled(silent_server: str) -> None:
    async def test() -> None:
        config = replace(CONFIG, jwt_auth_issuer_url=silent_server)
        auth = Authenticator(config, Log(stream=io.StringIO()))
        task = asyncio.create_task(auth.start())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5

    run(test)


def test_a_discovery_document_without_issuer_is_waited_on(issuer: Issuer) -> None:
    issuer.issuer = ""

    async def test() -> None:
        auth, log = make(issuer)
        task = asyncio.create_task(auth.start())
        await asyncio.sleep(0.4)
        assert "no issuer in the discovery document" in log.getvalue()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(test)


def test_debug_logs_issuer_key_ids_and_the_token_s_audience_and_issuer(issuer: Issuer) -> None:
    async def test() -> None:
        auth, log = make(issuer, debug=True)
        await auth.start()
        auth.check(bearer(issuer.mint()))
        text = log.getvalue()
        assert f"[JWT Auth] Issuer: {issuer.issuer}\tJWKS URI: {issuer.url}/" in text
        assert "[JWT Auth] Key: rsa-1" in text
        assert f"[JWT Auth] Token: audience: ['{issuer.issuer}']\tissuer: '{issuer.issuer}'" in text
        await auth.stop()

    run(test)


def test_without_debug_a_check_logs_nothing(issuer: Issuer) -> None:
    async def test() -> None:
        auth, log = make(issuer)
        await auth.start()
        auth.check(bearer(issuer.mint()))
        auth.check(bearer(issuer.forge_none()))
        assert log.getvalue() == ""
        await auth.stop()

    run(test)
