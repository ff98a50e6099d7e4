"""jwt_auth's settings: the function's ref must be known at start-up, or the start fails
naming what is missing."""

from pathlib import Path

import pytest

from fwatchdog.settings.config import ConfigError, load_config

BASE = {"fprocess": "cat", "jwt_auth": "true"}


def error_of(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_jwt_auth_is_off_by_default_and_needs_nothing() -> None:
    config = load_config({"fprocess": "cat"})
    assert (config.jwt_auth, config.jwt_auth_local, config.jwt_auth_debug) == (False, False, False)
    assert config.openfaas_namespace == ""


def test_the_function_ref_comes_from_openfaas_variables() -> None:
    config = load_config(
        {**BASE, "OPENFAAS_NAME": "env", "OPENFAAS_NAMESPACE": "openfaas-fn", "jwt_auth_local": "1"}
    )
    assert (config.openfaas_namespace, config.openfaas_name) == ("openfaas-fn", "env")
    assert config.jwt_auth and config.jwt_auth_local


def test_a_missing_name_stops_start_up_naming_it() -> None:
    assert error_of({**BASE, "OPENFAAS_NAMESPACE": "openfaas-fn"}).startswith("OPENFAAS_NAME: ")


def test_the_namespace_is_read_from_the_service_account_file(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("team-a\n")
    config = load_config(
        {**BASE, "OPENFAAS_NAME": "env", "jwt_auth_namespace_file": str(namespace_file)}
    )
    assert config.openfaas_namespace == "team-a"


def test_no_namespace_anywhere_stops_start_up_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "none")
    message = error_of({**BASE, "OPENFAAS_NAME": "env", "jwt_auth_namespace_file": missing})
    assert message.startswith("OPENFAAS_NAMESPACE: not set, and ")
    assert missing in message
    (tmp_path / "empty").write_text("\n")
    empty = str(tmp_path / "empty")
    message = error_of({**BASE, "OPENFAAS_NAME": "env", "jwt_auth_namespace_file": empty})
    assert "is empty" in message


def test_the_default_namespace_file_is_kubernetes_service_account_s() -> None:
    config = load_config({"fprocess": "cat"})
    assert config.jwt_auth_namespace_file == (
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    )


def test_the_issuer_url_must_be_http() -> None:
    message = error_of(
        {
            **BASE,
            "OPENFAAS_NAME": "a",
            "OPENFAAS_NAMESPACE": "b",
            "jwt_auth_issuer_url": "gateway:8080",
        }
    )
    assert message.startswith("jwt_auth_issuer_url: 'gateway:8080' is not an http")
    config = load_config({"fprocess": "cat", "jwt_auth_issuer_url": "https://gw.example.com/"})
    assert config.jwt_auth_issuer_url == "https://gw.example.com"


def test_the_key_set_refresh_interval_is_a_duration() -> None:
    assert load_config({"fprocess": "cat"}).jwt_auth_key_refresh == 300.0
    assert load_config({"fprocess": "cat", "jwt_auth_key_refresh": "2s"}).jwt_auth_key_refresh == 2
    assert error_of({"fprocess": "cat", "jwt_auth_key_refresh": "0"}).startswith(
        "jwt_auth_key_refresh: "
    )
