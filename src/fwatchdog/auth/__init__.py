"""jwt_auth: OpenFaaS IAM function tokens, checked on every function request.

Importing this package is cheap (stdlib only); the JOSE library (joserfc, on cryptography)
is imported by `Authenticator.start`, so a watchdog without jwt_auth never loads it. Import
the package only when `config.jwt_auth` is true all the same.

Interface for the server and the router
---------------------------------------

    auth = Authenticator(config, log)   # config.jwt_auth is true; config has checked
                                        # OPENFAAS_NAME and the namespace already
    await auth.start()      # discovery + JWK set; retries with back-off while the issuer is
                            # not up, logging each wait; returns once keys are loaded.
                            # Write the lock file only after it returns. Cancel to give up.
    result = auth.check(request_headers_authorization)   # str | None; synchronous, fast
    result.denial           # None: accepted. Else a Denial:
                            #   .status  401 (missing/invalid token), 403 (genuine token,
                            #            not for this function: "insufficient permissions"),
                            #            503 only if called before start() returned
                            #   .reason  one line (the body; also the log line's detail)
                            #   .body    reason + "\n", as Go's http.Error
                            #   .headers WWW-Authenticate: Bearer realm=IAM function invoke
                            #            (401 only), X-OpenFaaS-Internal: faas-middleware,
                            #            Content-Type: text/plain; charset=utf-8,
                            #            X-Content-Type-Options: nosniff
    result.seconds          # the check's duration; result.x_auth_seconds is its header
                            # text ("%f"): add `X-Auth-Seconds` to the request when accepted
    result.unknown_key      # refused because the token names a kid the set lacks while a
                            # refresh of the set runs; on a path that can await, call
    result = await auth.check_waiting(authorization)    # waits for that refresh (<= 2 s)
                            # and checks again (`check` first, then this only when
                            # `unknown_key`, keeps the fast lane free of awaits)
    await auth.stop()       # stop the refresh timer

Never for /_/health and /_/ready (Go's probes are outside the middleware); every other
request, in every mode and every http_workers process (each has its own Authenticator).

Keys: fetched again every jwt_auth_key_refresh (5m: a retired key stops being accepted) and
when a token names an unknown kid (at most once per 5 s). `check` refuses that request at
once (401) and starts the refresh in the background; `check_waiting` lets it wait for it.
A failed refresh keeps the keys we have. A verified token's verdict (accepted, or 403) is
remembered until its exp, for up to 1024 tokens: a reused token pays the signature check
once; verdicts of keys that leave the set are forgotten with them.

Settings (settings/config.py): jwt_auth, jwt_auth_local (issuer at http://127.0.0.1:8000,
else http://gateway.openfaas:8080), jwt_auth_debug (log issuer, key ids, each new token's
kid, alg, aud and iss), and ours: jwt_auth_issuer_url (the authority to discover, for tests
and issuers elsewhere), jwt_auth_namespace_file (where the namespace is read when
OPENFAAS_NAMESPACE is unset; default the Kubernetes service account's file) and
jwt_auth_key_refresh (5m).
"""

from fwatchdog.auth.authenticator import Authenticator
from fwatchdog.auth.outcome import AuthResult, Denial

__all__ = ["AuthResult", "Authenticator", "Denial"]
