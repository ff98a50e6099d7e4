"""load_config reads the Go of-watchdog's environment names and refuses values it cannot use."""

from dataclasses import fields, replace

import pytest

from fwatchdog.settings.config import (
    REFUSED,
    SETTINGS,
    Config,
    ConfigError,
    Setting,
    load_config,
    lock_file_path,
)

CAT = {"fprocess": "cat"}


def config_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(environ)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_match_config_defaults_and_go() -> None:
    config = load_config({"fprocess": "cat", "TMPDIR": "/tmp"})
    assert config == replace(Config(), function_process="cat", function_argv=("cat",))
    assert config.mode == "streaming"
    assert (config.port, config.metrics_port) == (8080, 8081)
    assert (config.exec_timeout, config.read_timeout, config.write_timeout) == (30.0, 30.0, 30.0)
    assert config.healthcheck_interval == 30.0
    assert config.content_type == "application/octet-stream"
    assert config.static_path == "/home/app/public"
    assert config.log_buffer_size == 65536
    assert config.prefix_logs is True
    assert config.lock_path == "/tmp/.lock"


def test_every_environment_setting_is_in_the_table_and_documented() -> None:
    derived = {"function_argv", "lock_path"}
    assert {s.name for s in SETTINGS} == {f.name for f in fields(Config)} - derived
    for setting in SETTINGS:
        assert setting.meaning and setting.default_text


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.default_text not in ("unset", "write_timeout")]
)
def test_help_default_text_is_the_real_default(setting: Setting) -> None:
    assert setting.parse(setting.default_text) == getattr(Config(), setting.name)


def test_function_process_wins_over_fprocess() -> None:
    config = load_config({"fprocess": "cat", "function_process": "wc -c"})
    assert config.function_process == "wc -c"
    assert config.function_argv == ("wc", "-c")


def test_empty_function_process_does_not_hide_fprocess() -> None:
    assert load_config({"fprocess": "cat", "function_process": ""}).function_argv == ("cat",)


def test_fprocess_is_split_on_spaces_without_shell_quoting_or_empty_arguments() -> None:
    config = load_config({"fprocess": "sh -c 'echo  hi'"})
    assert config.function_argv == ("sh", "-c", "'echo", "hi'")
    assert load_config({"fprocess": "cat  -n "}).function_argv == ("cat", "-n")


def test_tabs_are_not_separators() -> None:
    assert load_config({"fprocess": "cat\t-n"}).function_argv == ("cat\t-n",)


@pytest.mark.parametrize("environ", [{}, {"fprocess": ""}, {"fprocess": "   "}])
def test_missing_fprocess_is_an_error_naming_it(environ: dict[str, str]) -> None:
    assert config_error(environ) == (
        "fprocess: not set; give the function's command, e.g. fprocess=cat (or function_process)"
    )


def test_static_mode_needs_no_fprocess() -> None:
    config = load_config({"mode": "static", "static_path": "/srv"})
    assert (config.mode, config.function_argv, config.static_path) == ("static", (), "/srv")


@pytest.mark.parametrize("mode", ["streaming", "serializing", "afterburn", "static"])
def test_every_mode_is_accepted(mode: str) -> None:
    assert load_config({**CAT, "mode": mode}).mode == mode


def test_unknown_mode_lists_the_accepted_ones() -> None:
    assert config_error({**CAT, "mode": "Streaming"}) == (
        "mode: 'Streaming' is not one of streaming, serializing, afterburn, http, static"
    )


def test_http_mode_takes_http_upstream_url_over_upstream_url() -> None:
    config = load_config(
        {
            **CAT,
            "mode": "http",
            "upstream_url": "http://127.0.0.1:1",
            "http_upstream_url": "http://127.0.0.1:5000",
        }
    )
    assert config.upstream_url == "http://127.0.0.1:5000"
    assert load_config({**CAT, "upstream_url": "http://a:1"}).upstream_url == "http://a:1"


def test_http_mode_needs_an_upstream_url() -> None:
    assert config_error({**CAT, "mode": "http"}).startswith("http_upstream_url: not set;")


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:5000", "127.0.0.1:5000", "http://", "http://host:99999"]
)
def test_http_mode_rejects_urls_it_cannot_proxy_to(url: str) -> None:
    message = config_error({**CAT, "mode": "http", "upstream_url": url})
    assert message == f"upstream_url: {url!r} is not an http:// URL; use e.g. http://127.0.0.1:5000"


def test_upstream_url_is_not_checked_outside_http_mode() -> None:
    # The function inherits the environment and may use this name for its own purposes.
    config = load_config({**CAT, "upstream_url": "https://api.example.com"})
    assert config.upstream_url == "https://api.example.com"


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("65535", 65535), ("+9000", 9000)])
def test_port_accepts_tcp_ports(text: str, port: int) -> None:
    assert load_config({**CAT, "port": text}).port == port


@pytest.mark.parametrize("text", ["0", "65536", "-1", "http", "80.0", " 80", "8_080"])
def test_port_rejects_other_values(text: str) -> None:
    assert config_error({**CAT, "port": text}).startswith(f"port: {text!r} is not")


def test_metrics_port_must_differ_from_port() -> None:
    assert load_config({**CAT, "metrics_port": "9100"}).metrics_port == 9100
    message = config_error({**CAT, "port": "9000", "metrics_port": "9000"})
    assert message.startswith("metrics_port: 9000 is also the port for requests")
    assert config_error({**CAT, "metrics_port": "0"}).startswith("metrics_port: '0'")


@pytest.mark.parametrize(("text", "seconds"), [("1m30s", 90.0), ("45", 45.0), ("500ms", 0.5)])
def test_timeouts_take_go_durations_or_seconds(text: str, seconds: float) -> None:
    for name in ("exec_timeout", "read_timeout", "write_timeout", "healthcheck_interval"):
        assert getattr(load_config({**CAT, name: text}), name) == seconds


def test_bad_duration_names_setting_value_and_what_works() -> None:
    assert config_error({**CAT, "exec_timeout": "5x"}) == (
        "exec_timeout: '5x' is not a duration (unknown unit 'x'); "
        "use 30s, 1m30s, 500ms or a number of seconds"
    )
    assert config_error({**CAT, "read_timeout": "1m30"}).startswith(
        "read_timeout: '1m30' is not a duration (missing unit)"
    )


@pytest.mark.parametrize(
    "name", ["exec_timeout", "read_timeout", "write_timeout", "healthcheck_interval"]
)
def test_negative_durations_are_errors(name: str) -> None:
    assert (
        config_error({**CAT, name: "-5s"}) == f"{name}: '-5s' is negative; use 0 or more, e.g. 30s"
    )


def test_zero_exec_and_read_timeout_mean_no_limit() -> None:
    config = load_config({**CAT, "exec_timeout": "0", "read_timeout": "0s"})
    assert (config.exec_timeout, config.read_timeout) == (0.0, 0.0)


def test_zero_write_timeout_is_an_error() -> None:
    assert config_error({**CAT, "write_timeout": "0"}) == "write_timeout: must be more than 0s"


def test_healthcheck_interval_follows_write_timeout_unless_set() -> None:
    assert load_config({**CAT, "write_timeout": "1m"}).healthcheck_interval == 60.0
    config = load_config({**CAT, "write_timeout": "1m", "healthcheck_interval": "5s"})
    assert config.healthcheck_interval == 5.0
    config = load_config({**CAT, "write_timeout": "1m", "healthcheck_interval": "0"})
    assert config.healthcheck_interval == 0.0


def test_max_inflight() -> None:
    assert load_config({**CAT, "max_inflight": "10"}).max_inflight == 10
    assert load_config({**CAT, "max_inflight": "0"}).max_inflight == 0
    assert config_error({**CAT, "max_inflight": "-1"}).startswith("max_inflight: '-1' is negative")
    assert config_error({**CAT, "max_inflight": "2.5"}) == (
        "max_inflight: '2.5' is not a whole number"
    )


@pytest.mark.parametrize(("text", "size"), [("-1", -1), ("1", 1), ("1048576", 1048576)])
def test_log_buffer_size_accepts_minus_one_or_positive(text: str, size: int) -> None:
    assert load_config({**CAT, "log_buffer_size": text}).log_buffer_size == size


@pytest.mark.parametrize("text", ["0", "-2", "64k", "1e6"])
def test_log_buffer_size_rejects_other_values(text: str) -> None:
    assert config_error({**CAT, "log_buffer_size": text}).startswith(f"log_buffer_size: {text!r}")


@pytest.mark.parametrize("text", ["true", "True", "1", "t", "YES", "on"])
def test_booleans_accept_usual_true_spellings(text: str) -> None:
    # Go would read "True" or "yes" as false; we take the obvious meaning.
    for name in ("suppress_lock", "log_callid", "buffer_http"):
        assert getattr(load_config({**CAT, name: text}), name) is True


@pytest.mark.parametrize("text", ["false", "FALSE", "0", "f", "no", "Off"])
def test_booleans_accept_usual_false_spellings(text: str) -> None:
    assert load_config({**CAT, "prefix_logs": text}).prefix_logs is False


def test_empty_boolean_is_the_default() -> None:
    config = load_config({**CAT, "prefix_logs": "", "suppress_lock": ""})
    assert (config.prefix_logs, config.suppress_lock) == (True, False)


@pytest.mark.parametrize("name", ["suppress_lock", "prefix_logs", "log_callid", "buffer_http"])
def test_unknown_boolean_is_an_error_naming_the_setting(name: str) -> None:
    assert config_error({**CAT, name: "maybe"}) == (
        f"{name}: 'maybe' is not true or false; use true/false, 1/0, yes/no or on/off"
    )


@pytest.mark.parametrize(
    ("buffer_http", "http_buffer_req_body", "expected"),
    [("", "", False), ("true", "", True), ("", "true", True), ("false", "true", True)],
)
def test_either_buffer_name_enables_buffering(
    buffer_http: str, http_buffer_req_body: str, expected: bool
) -> None:
    environ = {**CAT, "buffer_http": buffer_http, "http_buffer_req_body": http_buffer_req_body}
    assert load_config(environ).buffer_http is expected


def test_bad_value_in_either_buffer_name_is_an_error() -> None:
    message = config_error({**CAT, "buffer_http": "true", "http_buffer_req_body": "sure"})
    assert message.startswith("http_buffer_req_body: 'sure'")


def test_ready_path_must_be_a_path() -> None:
    assert load_config({**CAT, "ready_path": "/ready"}).ready_path == "/ready"
    assert config_error({**CAT, "ready_path": "ready"}).startswith("ready_path: 'ready'")


def test_log_format_is_text_or_json() -> None:
    assert load_config({**CAT, "log_format": "json"}).log_format == "json"
    assert (
        config_error({**CAT, "log_format": "xml"}) == "log_format: 'xml' is not one of text, json"
    )


def test_plain_strings_are_taken_as_given() -> None:
    config = load_config({**CAT, "content_type": "text/plain", "static_path": "/srv/www"})
    assert (config.content_type, config.static_path) == ("text/plain", "/srv/www")


def test_values_with_newlines_stay_on_one_error_line() -> None:
    assert config_error({**CAT, "port": "80\n81"}) == ("port: '80\\n81' is not a whole number")


def test_lock_file_follows_tmpdir_like_go_os_tempdir() -> None:
    assert lock_file_path({}) == "/tmp/.lock"
    assert lock_file_path({"TMPDIR": ""}) == "/tmp/.lock"
    assert lock_file_path({"TMPDIR": "/var/tmp"}) == "/var/tmp/.lock"
    assert load_config({**CAT, "TMPDIR": "/run/x"}).lock_path == "/run/x/.lock"


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().port = 1  # type: ignore[misc]


def test_http_workers_over_one_refuses_max_inflight() -> None:
    environ = {"fprocess": "cat", "http_workers": "2", "max_inflight": "10"}
    assert config_error(environ).startswith("http_workers: 2 processes cannot share max_inflight")
    assert load_config({**environ, "http_workers": "1"}).max_inflight == 10
    assert load_config({**environ, "http_workers": ""}).http_workers == 0


@pytest.mark.parametrize("mode", ["streaming", "serializing", "afterburn"])
def test_http_workers_over_one_is_refused_where_one_process_serves(mode: str) -> None:
    environ = {"fprocess": "cat", "mode": mode, "http_workers": "2"}
    assert config_error(environ).startswith(
        f"http_workers: only http and static mode serve in several processes, not mode={mode}"
    )
    assert load_config({**environ, "http_workers": "1"}).http_workers == 1


# --- Go settings fwatchdog cannot honour: refused, never ignored (issue 16) ---


def test_debug_headers_on_is_refused_naming_it() -> None:
    message = config_error({**CAT, "debug_headers": "true"})
    assert message.startswith("debug_headers: 'true' cannot be honoured: ")
    assert "write_debug" in message  # says what to use instead


def test_debug_headers_off_or_unset_is_honoured_as_is() -> None:
    assert load_config({**CAT, "debug_headers": "false"}) == load_config(CAT)
    assert load_config({**CAT, "debug_headers": ""}) == load_config(CAT)


def test_debug_headers_that_is_not_a_boolean_is_refused_naming_it() -> None:
    assert config_error({**CAT, "debug_headers": "loud"}).startswith("debug_headers: 'loud'")


def test_mode_inproc_is_refused_with_the_reason_not_just_unknown() -> None:
    message = config_error({**CAT, "mode": "inproc"})
    assert message.startswith("mode: 'inproc' cannot be honoured: ")
    assert "Go handler" in message and "mode=http" in message


def test_log_call_id_from_go_s_readme_turns_call_ids_on() -> None:
    assert load_config({**CAT, "log_call_id": "true"}).log_callid is True
    # Go's code reads log_callid; it wins when both are set.
    assert load_config({**CAT, "log_callid": "false", "log_call_id": "true"}).log_callid is False
    assert config_error({**CAT, "log_call_id": "2"}).startswith("log_call_id: ")


def test_every_go_of_watchdog_and_classic_setting_is_read_or_refused() -> None:
    """The environment variables Go's of-watchdog (config/config.go, pkg/watchdog.go) and the
    classic watchdog (readconfig.go, main.go) read: each is a setting of ours or refused."""
    go_names = {
        "fprocess", "function_process", "upstream_url", "http_upstream_url", "content_type",
        "static_path", "write_timeout", "healthcheck_interval", "log_buffer_size", "log_callid",
        "port", "read_timeout", "exec_timeout", "suppress_lock", "buffer_http",
        "http_buffer_req_body", "max_inflight", "prefix_logs", "ready_path", "mode", "jwt_auth",
        "jwt_auth_debug", "jwt_auth_local", "OPENFAAS_NAME", "OPENFAAS_NAMESPACE",
        # the classic watchdog's, and log_call_id from the of-watchdog README
        "cgi_headers", "marshal_request", "debug_headers", "combine_output", "write_debug",
        "read_debug", "log_call_id",
    }  # fmt: skip
    ours = {name for setting in SETTINGS for name in setting.env_names}
    refused = {name for name, _, _ in REFUSED}
    assert go_names - ours - refused == set()
