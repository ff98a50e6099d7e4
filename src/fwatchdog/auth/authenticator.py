"""The watchdog's side of OpenFaaS IAM: load the issuer's keys, check each request's token,
keep the keys current.

Only `start` imports the JOSE library (joserfc, with cryptography): without jwt_auth the
watchdog never loads it, and its start-up time and memory are what they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fwatchdog.auth.issuer import IssuerError, authority_of, discover, fetch_json
from fwatchdog.auth.outcome import NO_BEARER, AuthResult, Denial
from fwatchdog.auth.remembered import RememberedTokens
from fwatchdog.settings.config import Config
from fwatchdog.telemetry.logs import Log

if TYPE_CHECKING:
    from fwatchdog.auth.verifier import Verifier

# After a failed timed refresh, the next try comes this soon (keys kept meanwhile).
RETRY_AFTER_FAILED_REFRESH = 30.0
# A token naming an unknown kid fetches the set again, at most once in this many seconds:
# a flood of made-up key ids costs the issuer one fetch per gap, not one per request.
UNKNOWN_KID_REFRESH_GAP = 5.0
# check_waiting: longest a request naming an unknown kid waits for that refresh.
UNKNOWN_KID_WAIT = 2.0
# start: waits between tries while the issuer is not up, doubling up to the last.
START_RETRY_FIRST = 0.25
START_RETRY_MAX = 5.0
REMEMBERED_TOKENS = 1024

_MARK_AND_PLAIN = (
    ("X-OpenFaaS-Internal", "faas-middleware"),
    ("Content-Type", "text/plain; charset=utf-8"),
    ("X-Content-Type-Options", "nosniff"),
)
# Only if a request arrives before start() has returned (the lock file is not written yet).
KEYS_NOT_LOADED = Denial(503, "jwt_auth: the issuer's keys are not loaded yet", _MARK_AND_PLAIN)


class Authenticator:
    """Checks function tokens for this function (`OPENFAAS_NAMESPACE:OPENFAAS_NAME`).

    `clock` (seconds since the epoch) is for tests that move time; the intervals are
    parameters for the same reason.
    """

    def __init__(
        self,
        config: Config,
        log: Log,
        *,
        key_set_max_age: float | None = None,
        unknown_kid_refresh_gap: float = UNKNOWN_KID_REFRESH_GAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.authority = authority_of(config.jwt_auth_issuer_url, config.jwt_auth_local)
        self.function_ref = f"{config.openfaas_namespace}:{config.openfaas_name}"
        self._debug = config.jwt_auth_debug
        self._log = log
        # The set is fetched again this often, so that a retired key stops being accepted.
        self._key_set_max_age = key_set_max_age or config.jwt_auth_key_refresh
        self._unknown_kid_refresh_gap = unknown_kid_refresh_gap
        self._clock = clock
        self._verifier: Verifier | None = None
        self._remembered = RememberedTokens(REMEMBERED_TOKENS)
        self._skipped: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh_task: asyncio.Task[bool] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._last_refresh = -float("inf")  # time.monotonic() of the last refresh's start

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys in use (empty before start)."""
        return [] if self._verifier is None else list(self._verifier.keys)

    # --- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the issuer's keys, trying again with back-off (and saying so in the log) while
        the issuer is not up; return once they are loaded. Cancel it to give up."""
        self._loop = asyncio.get_running_loop()
        delay = START_RETRY_FIRST
        waited = False
        while True:
            try:
                await self._load(require_keys=True)
                break
            except IssuerError as error:
                # The first line says how to point elsewhere; later ones only that we wait.
                hint = "" if waited else "; jwt_auth_local or jwt_auth_issuer_url choose where"
                self._log.error(
                    f"jwt_auth: waiting for the issuer ({error}); trying again in {delay:g}s" + hint
                )
                waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX)
        if waited:
            self._log.info(f"jwt_auth: keys loaded from the issuer at {self.authority}")
        self._timer_task = self._loop.create_task(self._refresh_on_timer())

    async def stop(self) -> None:
        """Stop refreshing the keys."""
        for task in (self._timer_task, self._refresh_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # --- the hot path ----------------------------------------------------------------------------

    def check(self, authorization: str | None) -> AuthResult:
        """Whether a request with this Authorization header value may invoke the function.

        Synchronous: a token seen before is one dict lookup; a new one, a signature check.
        A token naming a key the set does not have is refused, and starts a refresh of the
        set (at most one per UNKNOWN_KID_REFRESH_GAP); `unknown_key` then says one is under
        way, for callers that can wait for it (`check_waiting`).
        """
        started = time.perf_counter()
        if authorization is not None:
            remembered = self._remembered.get(authorization)
            if remembered is not None:
                if remembered[0] > self._clock():
                    return AuthResult(remembered[2], time.perf_counter() - started)
                self._remembered.forget(authorization)
        token = _bearer_token(authorization)
        if token is None:
            return AuthResult(NO_BEARER, time.perf_counter() - started)
        verifier = self._verifier
        if verifier is None:
            return AuthResult(KEYS_NOT_LOADED, time.perf_counter() - started)
        verdict = verifier.verify(token)
        if verdict.unknown_kid:
            pending = self._refresh_soon()
            return AuthResult(verdict.denial, time.perf_counter() - started, pending)
        if verdict.kid is not None and authorization is not None:
            # A genuine token, accepted or not for this function: its verdict holds till exp.
            self._remembered.remember(
                authorization, verdict.expires_at, verdict.kid, verdict.denial
            )
        return AuthResult(verdict.denial, time.perf_counter() - started)

    async def check_waiting(self, authorization: str | None) -> AuthResult:
        """`check`, but a token naming an unknown key waits (at most UNKNOWN_KID_WAIT) for the
        refresh it started, then is checked against the new set: the first requests signed
        by a key the issuer just added pass instead of getting 401."""
        started = time.perf_counter()
        result = self.check(authorization)
        task = self._refresh_task
        if not result.unknown_key or task is None:
            return result
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(UNKNOWN_KID_WAIT):
                await asyncio.shield(task)
        result = self.check(authorization)
        result.seconds = time.perf_counter() - started
        result.unknown_key = False
        return result

    # --- keys ------------------------------------------------------------------------------------

    def _refresh_soon(self) -> bool:
        """Start a refresh unless one runs or one started less than the gap ago; whether one
        is under way now."""
        if self._refresh_task is not None and not self._refresh_task.done():
            return True
        now = time.monotonic()
        if now - self._last_refresh < self._unknown_kid_refresh_gap or self._loop is None:
            return False
        self._last_refresh = now
        self._refresh_task = self._loop.create_task(self._refresh("a token named an unknown kid"))
        return True

    async def _refresh_on_timer(self) -> None:
        delay = self._key_set_max_age
        while True:
            await asyncio.sleep(delay)
            if self._refresh_task is None or self._refresh_task.done():
                self._last_refresh = time.monotonic()
                self._refresh_task = asyncio.get_running_loop().create_task(self._refresh("timer"))
            loaded = await asyncio.shield(self._refresh_task)
            delay = (
                self._key_set_max_age
                if loaded
                else min(self._key_set_max_age, RETRY_AFTER_FAILED_REFRESH)
            )

    async def _refresh(self, why: str) -> bool:
        """Fetch the set again; on failure keep the keys we have. Whether it loaded."""
        try:
            await self._load(require_keys=False)
        except Exception as error:  # a background task: nobody else would see it
            self._log.error(
                f"jwt_auth: could not refresh the issuer's keys ({why}): {error}; "
                f"keeping the {len(self.key_ids)} we have"
            )
            return False
        return True

    async def _load(self, require_keys: bool) -> None:
        """Discovery, then the key set; swap in a verifier for them."""
        from fwatchdog.auth.keys import parse_key_set
        from fwatchdog.auth.verifier import Verifier

        discovery = await discover(self.authority)
        document = await fetch_json(discovery.jwks_uri)
        try:
            keys, skipped = parse_key_set(document)
        except ValueError as error:
            raise IssuerError(f"{discovery.jwks_uri}: {error}") from None
        if skipped != self._skipped:
            for problem in skipped:
                self._log.error(f"jwt_auth: {discovery.jwks_uri}: skipped {problem}")
            self._skipped = skipped
        if require_keys and not keys:
            raise IssuerError(f"{discovery.jwks_uri}: no key we can verify tokens with")
        if self._debug:
            self._log.info(f"[JWT Auth] Issuer: {discovery.issuer}\tJWKS URI: {discovery.jwks_uri}")
            for kid in keys:
                self._log.info(f"[JWT Auth] Key: {kid}")
        old = self._verifier
        self._verifier = Verifier(
            discovery.issuer,
            keys,
            self.function_ref,
            self._log if self._debug else None,
            self._clock,
        )
        if old is None or old.issuer != discovery.issuer:
            self._remembered.clear()
        else:
            # Verdicts stand for tokens whose key is still in the set, unchanged.
            self._remembered.keep_keys(
                {
                    kid
                    for kid, key in keys.items()
                    if kid in old.keys and old.keys[kid].material == key.material
                }
            )


def _bearer_token(authorization: str | None) -> str | None:
    """The token of `Bearer <token>` (scheme in any case, as faas-middleware reads it now)."""
    if authorization is None or len(authorization) <= 7:
        return None
    if authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip() or None
