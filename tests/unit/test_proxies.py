"""HTTP_PROXY/HTTPS_PROXY/NO_PROXY read as Go's http.ProxyFromEnvironment reads them."""

from __future__ import annotations

import pytest

from fwatchdog.auth.proxies import Proxy, proxy_for

PROXY = Proxy("proxy.corp", 3128, None)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "proxied"),
    [
        ("gateway.openfaas", 8080, "", True),
        ("localhost", 8080, "", False),  # never, whatever the lists say
        ("127.0.0.1", 8000, "", False),
        ("::1", 8000, "", False),
        ("gateway.openfaas", 8080, "*", False),
        ("gateway.openfaas", 8080, "other, gateway.openfaas", False),
        ("gateway.openfaas", 8080, "GATEWAY.OPENFAAS", False),
        ("a.gateway.openfaas", 8080, "gateway.openfaas", False),  # a name: it and below
        ("gateway.openfaas", 8080, ".gateway.openfaas", True),  # a leading dot: below only
        ("a.gateway.openfaas", 8080, ".gateway.openfaas", False),
        ("a.gateway.openfaas", 8080, "*.gateway.openfaas", False),
        ("xgateway.openfaas", 8080, "gateway.openfaas", True),
        ("gateway.openfaas", 8080, "gateway.openfaas:9090", True),  # another port
        ("gateway.openfaas", 8080, "gateway.openfaas:8080", False),
        ("10.1.2.3", 8080, "10.0.0.0/8", False),
        ("11.1.2.3", 8080, "10.0.0.0/8", True),
        ("10.1.2.3", 8080, "10.1.2.3", False),
        ("fd00::5", 8080, "[fd00::5]:8080", False),
    ],
)
def test_who_goes_through_the_proxy(host: str, port: int, no_proxy: str, proxied: bool) -> None:
    environ = {"HTTP_PROXY": "http://proxy.corp:3128", "NO_PROXY": no_proxy}
    assert (proxy_for("http", host, port, environ) == PROXY) is proxied


def test_the_variables_as_go_reads_them() -> None:
    assert proxy_for("http", "gw", 80, {}) is None
    assert proxy_for("http", "gw", 80, {"http_proxy": "proxy.corp:3128"}) == PROXY  # no scheme
    upper_wins = {"HTTP_PROXY": "http://proxy.corp:3128", "http_proxy": "http://other:1"}
    assert proxy_for("http", "gw", 80, upper_wins) == PROXY
    assert proxy_for("https", "gw", 443, {"HTTP_PROXY": "http://proxy.corp:3128"}) is None
    assert proxy_for("https", "gw", 443, {"HTTPS_PROXY": "http://proxy.corp"}) == Proxy(
        "proxy.corp", 80, None
    )
    assert proxy_for("http", "gw", 80, {"HTTP_PROXY": "http://u:p%3A@proxy.corp:3128"}) == Proxy(
        "proxy.corp",
        3128,
        "Basic dTpwOg==",  # u:p:
    )


def test_a_proxy_it_cannot_speak_to_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"HTTPS_PROXY=https://proxy\.corp"):
        proxy_for("https", "gw", 443, {"HTTPS_PROXY": "https://proxy.corp"})
