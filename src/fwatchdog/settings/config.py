"""Every setting of the watchdog: its environment names, default, check and meaning.

The environment is read once, at start-up, into one frozen `Config`. A value we cannot use stops
the start with a one-line `ConfigError` naming the setting, the value and what is accepted: the Go
of-watchdog falls back to defaults silently, and a function that quietly runs with a 30s timeout
instead of the 5m its author wrote is worse than one that does not start.
"""

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fwatchdog.settings.durations import parse_duration

MODES = ("streaming", "serializing", "afterburn", "http", "static")
# The modes that may serve the port in several processes (http_workers); the others' functions
# need the CPUs.
MULTI_PROCESS_MODES = ("http", "static")


class ConfigError(Exception):
    """A setting has a value we cannot use; the message is one line a user can act on."""


@dataclass(frozen=True)
class Config:
    """The watchdog's settings, already checked.

    `Config()` is the all-defaults configuration (with no function command), which is what tests
    build on with `dataclasses.replace`. Durations are seconds; 0 means "no limit" where a
    setting allows it.
    """

    mode: str = "streaming"
    function_process: str = ""
    function_argv: tuple[str, ...] = ()
    port: int = 8080
    metrics_port: int = 8081
    upstream_url: str = ""
    exec_timeout: float = 30.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    healthcheck_interval: float = 30.0
    max_inflight: int = 0
    content_type: str = "application/octet-stream"
    suppress_lock: bool = False
    static_path: str = "/home/app/public"
    static_dotfiles: bool = False
    ready_path: str = ""
    prefix_logs: bool = True
    log_buffer_size: int = 65536
    log_callid: bool = False
    buffer_http: bool = False
    log_format: str = "text"
    lock_path: str = "/tmp/.lock"
    cgi_response: bool = False
    cgi_headers: bool = True
    marshal_request: bool = False
    combine_output: bool = False
    write_debug: bool = False
    read_debug: bool = False
    afterburn_processes: int = 1
    http_workers: int = 0
    spawn_threads: int = 0
    multipart: str = "false"
    multipart_max_parts: int = 1000
    multipart_max_fields_size: int = 1024 * 1024
    jwt_auth: bool = False
    jwt_auth_local: bool = False
    jwt_auth_debug: bool = False
    jwt_auth_issuer_url: str = ""
    openfaas_name: str = ""
    openfaas_namespace: str = ""
    jwt_auth_namespace_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    jwt_auth_key_refresh: float = 300.0


# --- value parsers: each takes the raw text and raises ValueError(reason) -------------------------
# The reason is what follows "<setting>: " in the error, so it quotes the value and says what works.

_INTEGER = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi takes; no "8_080", no spaces
_TRUE = frozenset({"true", "1", "t", "yes", "on"})
_FALSE = frozenset({"false", "0", "f", "no", "off"})


def _integer(text: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _port(text: str) -> int:
    port = _integer(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r} is not a TCP port; use a number from 1 to 65535")
    return port


def _at_least_zero(text: str) -> int:
    number = _integer(text)
    if number < 0:
        raise ValueError(f"{text!r} is negative; use 0 (no limit) or more")
    return number


def _positive(text: str) -> int:
    number = _integer(text)
    if number < 1:
        raise ValueError(f"{text!r} is less than 1; use 1 or more")
    return number


def _log_buffer_size(text: str) -> int:
    number = _integer(text)
    if number != -1 and number < 1:
        raise ValueError(f"{text!r} is not a line length; use a number of bytes, or -1 (no limit)")
    return number


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        raise ValueError(
            f"{text!r} is not a duration ({error}); use 30s, 1m30s, 500ms or a number of seconds"
        ) from None
    if seconds < 0:
        raise ValueError(f"{text!r} is negative; use 0 or more, e.g. 30s")
    return seconds


def _positive_duration(text: str) -> float:
    seconds = _duration(text)
    if seconds == 0:
        raise ValueError("must be more than 0s")
    return seconds


def _boolean(text: str) -> bool:
    # Go's of-watchdog takes only "true" and "1" as true, so "True" or "yes" silently mean false
    # there; we accept the usual spellings in any case and reject anything else.
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not true or false; use true/false, 1/0, yes/no or on/off")


def _one_of(*accepted: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in accepted:
            raise ValueError(f"{text!r} is not one of {', '.join(accepted)}")
        return text

    return check


def _url_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not a path; it must start with /, e.g. /ready")
    return text


def _upstream_url(text: str) -> str:
    problem = f"{text!r} is not an http:// URL; use e.g. http://127.0.0.1:5000"
    if not text.startswith("http://"):
        raise ValueError(problem)
    # Imported here: urllib.parse (with ipaddress) costs 0.8 MiB that only http mode needs.
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(problem) from None
    if not parts.hostname:
        raise ValueError(problem)
    return text


def _text(text: str) -> str:
    return text


def _issuer_url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text.split("//", 1)[1]) == 0:
        raise ValueError(
            f"{text!r} is not an http:// or https:// URL; use e.g. http://127.0.0.1:8000"
        )
    return text.rstrip("/")


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting: the `Config` field `name`, read from the environment variables `env_names`.

    `aliases` are the other environment variables read for it. Normally `name` wins over its
    aliases; `alias_wins` reverses that where the Go watchdog does (`http_upstream_url` over
    `upstream_url`). `default_text` is for `--help` ("unset" when there is none); the default
    itself is `Config`'s.
    """

    name: str
    aliases: tuple[str, ...]
    default_text: str
    meaning: str
    parse: Callable[[str], Any] = _text
    alias_wins: bool = False

    @property
    def env_names(self) -> tuple[str, ...]:
        """Environment variables to read, the one that wins first."""
        if self.alias_wins:
            return (*self.aliases, self.name)
        return (self.name, *self.aliases)


SETTINGS: tuple[Setting, ...] = (
    Setting("mode", (), "streaming", "how the function runs: " + ", ".join(MODES), _one_of(*MODES)),
    Setting(
        "function_process",
        ("fprocess",),
        "unset",
        "the function's command, split on single spaces (no shell quoting); "
        "required in every mode but static",
    ),
    Setting("port", (), "8080", "TCP port for requests", _port),
    Setting("metrics_port", (), "8081", "TCP port for /metrics; must differ from port", _port),
    Setting(
        "upstream_url",
        ("http_upstream_url",),
        "unset",
        "http mode: the function's own HTTP server, e.g. http://127.0.0.1:5000; "
        "http_upstream_url wins over upstream_url",
        alias_wins=True,
    ),
    Setting(
        "exec_timeout",
        (),
        "30s",
        "longest a request may run the function; 0 disables it",
        _duration,
    ),
    Setting(
        "read_timeout",
        (),
        "30s",
        "longest to wait for a request's head and body; 0: no limit",
        _duration,
    ),
    Setting(
        "write_timeout",
        (),
        "30s",
        "longest to send a response; must be more than 0s",
        _positive_duration,
    ),
    Setting(
        "healthcheck_interval",
        (),
        "write_timeout",
        "after SIGTERM, how long /_/health answers 503 before the watchdog stops accepting",
        _duration,
    ),
    Setting(
        "max_inflight",
        (),
        "0",
        "requests run at once; past it 429 at once; 0: unlimited",
        _at_least_zero,
    ),
    Setting(
        "content_type",
        (),
        "application/octet-stream",
        "Content-Type of responses from forking modes when the function sets none",
    ),
    Setting("suppress_lock", (), "false", "do not write the lock file used by health", _boolean),
    Setting("static_path", (), "/home/app/public", "static mode: directory to serve"),
    Setting(
        "static_dotfiles",
        (),
        "false",
        "static mode: serve and list names starting with a dot (.env, .git/); 404 otherwise",
        _boolean,
    ),
    Setting(
        "ready_path",
        (),
        "unset",
        "when set, /_/ready also asks the function at this path, e.g. /ready",
        _url_path,
    ),
    Setting(
        "prefix_logs",
        (),
        "true",
        "prefix function output lines with time and stream name",
        _boolean,
    ),
    Setting(
        "log_buffer_size",
        (),
        "65536",
        "longest function output line logged, in bytes (longer ones are cut); -1: no limit",
        _log_buffer_size,
    ),
    Setting(
        "log_callid",
        ("log_call_id",),
        "false",
        "add the X-Call-Id header to request log lines (log_call_id: the name Go's README gives)",
        _boolean,
    ),
    Setting(
        "buffer_http",
        ("http_buffer_req_body",),
        "false",
        "http mode: read the whole request body before sending it upstream; either name enables it",
        _boolean,
    ),
    Setting("log_format", (), "text", "log lines as text or json", _one_of("text", "json")),
    Setting(
        "cgi_response",
        (),
        "false",
        "forking modes: the function's output starts with CGI header lines (Status, "
        "Content-Type, Location, Set-Cookie, ...) and an empty line, then the body",
        _boolean,
    ),
    Setting(
        "cgi_headers",
        (),
        "true",
        "forking modes: pass request headers as Http_* variables (RFC 3875 ones always are)",
        _boolean,
    ),
    Setting(
        "marshal_request",
        (),
        "false",
        "forking modes: stdin gets the classic watchdog's JSON "
        '{"header": {...}, "body": {"raw": <base64>}} instead of the body',
        _boolean,
    ),
    Setting(
        "combine_output",
        (),
        "false",
        "serializing mode: stderr goes into the response with stdout (classic watchdog)",
        _boolean,
    ),
    Setting("write_debug", (), "false", "forking modes: log the function's output", _boolean),
    Setting("read_debug", (), "false", "forking modes: log the request body", _boolean),
    Setting(
        "afterburn_processes",
        (),
        "1",
        "afterburn mode: copies of fprocess started, each serving one request at a time",
        _positive,
    ),
    Setting(
        "http_workers",
        (),
        "0",
        "http and static mode: processes that serve the port, each proxying to the one "
        "fprocess or serving static_path; 0: one per CPU this container may use (in http mode "
        "less the one the function needs; at most 8, and one per 128 MiB of a memory limit); "
        "must be 1 (or 0, which then means 1) with max_inflight, whose count lives in one "
        "process, and in the other modes, whose functions need the CPUs",
        _at_least_zero,
    ),
    Setting(
        "spawn_threads",
        (),
        "0",
        "streaming and serializing: worker threads that start functions; 0 starts them on "
        "the event loop (measured no slower on 2 cores; try 2 on a busy machine)",
        _at_least_zero,
    ),
    Setting(
        "multipart",
        (),
        "false",
        "streaming and serializing modes: true decodes a multipart/form-data body before the "
        "function starts: text fields as Http_Form_<name>, files saved in Http_Form_Dir and "
        "listed in Http_Form_Files, stdin empty; stream (streaming mode): the function starts "
        "when the first file part begins, that part streamed to stdin; false passes the body "
        "to stdin unchanged",
        _one_of("false", "true", "stream"),
    ),
    Setting(
        "multipart_max_parts",
        (),
        "1000",
        "multipart=true: most parts a form may have; past it 413",
        _positive,
    ),
    Setting(
        "multipart_max_fields_size",
        (),
        "1048576",
        "multipart=true: most bytes all text fields of a form may hold together; past it 413",
        _positive,
    ),
    # --- jwt_auth: OpenFaaS IAM function tokens (fwatchdog/auth) ---
    Setting(
        "jwt_auth",
        (),
        "false",
        "every function request needs an OpenFaaS function token (Authorization: Bearer) "
        "issued for OPENFAAS_NAMESPACE:OPENFAAS_NAME; 401/403 otherwise",
        _boolean,
    ),
    Setting(
        "jwt_auth_local",
        (),
        "false",
        "jwt_auth: discover the issuer at http://127.0.0.1:8000, not http://gateway.openfaas:8080",
        _boolean,
    ),
    Setting(
        "jwt_auth_debug", (), "false", "jwt_auth: log key ids, token issuer and audience", _boolean
    ),
    Setting(
        "jwt_auth_issuer_url",
        (),
        "unset",
        "jwt_auth: where to discover the issuer (<url>/.well-known/openid-configuration), "
        "overriding jwt_auth_local's choice",
        _issuer_url,
    ),
    Setting(
        "openfaas_name",
        ("OPENFAAS_NAME",),
        "unset",
        "jwt_auth: the function's name (OpenFaaS sets OPENFAAS_NAME); required with jwt_auth",
        alias_wins=True,
    ),
    Setting(
        "openfaas_namespace",
        ("OPENFAAS_NAMESPACE",),
        "unset",
        "jwt_auth: the function's namespace (OpenFaaS sets OPENFAAS_NAMESPACE); "
        "unset: read from jwt_auth_namespace_file",
        alias_wins=True,
    ),
    Setting(
        "jwt_auth_namespace_file",
        (),
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
        "jwt_auth: the file holding the function's namespace when OPENFAAS_NAMESPACE is unset",
    ),
    Setting(
        "jwt_auth_key_refresh",
        (),
        "5m",
        "jwt_auth: how often the issuer's key set is fetched again, so that a retired key is "
        "refused after at most this long (a token naming an unknown key fetches it sooner)",
        _positive_duration,
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}

# --- what the Go watchdogs read but fwatchdog cannot honour: refused at start, never ignored ---
# (environment variable, the value refused (None: any true value), why and what to do instead).
REFUSED: tuple[tuple[str, str | None, str], ...] = (
    (
        "debug_headers",
        None,
        "the classic watchdog's logging of request and response headers is not implemented; "
        "unset it (write_debug and read_debug log bodies)",
    ),
    (
        "mode",
        "inproc",
        "runs a Go handler compiled into the Go of-watchdog, which fwatchdog cannot; use "
        "mode=http, or mode=afterburn with fwatchdog.function.serve for Python",
    ),
)


def _refuse_unhonoured(environ: Mapping[str, str]) -> None:
    """A Go setting we cannot honour stops the start: silently ignoring it would change what
    the function does without anyone being told."""
    for name, refused, why in REFUSED:
        text = environ.get(name, "")
        if refused is None:
            if text and _parse(_boolean, name, text):
                raise ConfigError(f"{name}: {text!r} cannot be honoured: {why}")
        elif text == refused:
            raise ConfigError(f"{name}: {text!r} cannot be honoured: {why}")


def lock_file_path(environ: Mapping[str, str]) -> str:
    """Where the lock file lives: Go's `filepath.Join(os.TempDir(), ".lock")`.

    A function of its own because `--run-healthcheck` needs it without the rest of the config.
    """
    return os.path.join(environ.get("TMPDIR") or "/tmp", ".lock")


def load_config(environ: Mapping[str, str]) -> Config:
    """Read and check every setting from `environ`; raise ConfigError for the first bad one."""
    _refuse_unhonoured(environ)
    defaults = Config()
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        values[setting.name] = _read(setting, environ, getattr(defaults, setting.name))

    # An unset or empty healthcheck_interval follows write_timeout, as in Go.
    if not _raw(_BY_NAME["healthcheck_interval"], environ)[1]:
        values["healthcheck_interval"] = values["write_timeout"]

    # Either name turns buffering on; the table read above only sees the one that wins.
    # A list, not a generator, so a bad value in the second name is reported even if the first
    # is already true.
    buffer_flags = [
        _parse(_boolean, name, environ[name])
        for name in _BY_NAME["buffer_http"].env_names
        if environ.get(name)
    ]
    values["buffer_http"] = any(buffer_flags)

    # Go's strings.Split(s, " ") would give "" for every extra space ("cat  -n" -> ["cat", "",
    # "-n"]) and run the function with empty arguments; we drop those pieces instead.
    values["function_argv"] = tuple(part for part in values["function_process"].split(" ") if part)
    values["lock_path"] = lock_file_path(environ)

    _check_together(values, environ)
    if values["jwt_auth"]:
        values["openfaas_namespace"] = _function_namespace(values)
    return Config(**values)


def _function_namespace(values: Mapping[str, Any]) -> str:
    """jwt_auth: the function is `<namespace>:<name>` in tokens; without either, Go fails to
    start, and so do we, naming what is missing."""
    if not values["openfaas_name"]:
        raise ConfigError(
            "OPENFAAS_NAME: not set; jwt_auth=true needs the function's name (OpenFaaS sets it)"
        )
    if values["openfaas_namespace"]:
        return str(values["openfaas_namespace"])
    path = values["jwt_auth_namespace_file"]
    try:
        with open(path, encoding="utf-8") as file:
            namespace = file.read().strip()
    except OSError as error:
        raise ConfigError(
            f"OPENFAAS_NAMESPACE: not set, and {path} cannot be read ({error.strerror}); "
            "jwt_auth=true needs the function's namespace"
        ) from None
    if not namespace:
        raise ConfigError(
            f"OPENFAAS_NAMESPACE: not set, and {path} is empty; "
            "jwt_auth=true needs the function's namespace"
        )
    return namespace


def _check_together(values: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Checks that involve more than one setting."""
    if values["mode"] != "static" and not values["function_argv"]:
        raise ConfigError(
            "fprocess: not set; give the function's command, e.g. fprocess=cat "
            "(or function_process)"
        )
    if values["metrics_port"] == values["port"]:
        raise ConfigError(
            f"metrics_port: {values['metrics_port']} is also the port for requests; "
            "give metrics_port and port different numbers"
        )
    if values["multipart"] == "stream" and values["mode"] != "streaming":
        raise ConfigError(
            f"multipart: 'stream' needs mode=streaming (mode is {values['mode']}); "
            "use multipart=true"
        )
    if values["http_workers"] > 1 and values["max_inflight"] > 0:
        raise ConfigError(
            f"http_workers: {values['http_workers']} processes cannot share max_inflight's "
            "count; set http_workers=1 (or leave it unset) to use max_inflight"
        )
    if values["http_workers"] > 1 and values["mode"] not in MULTI_PROCESS_MODES:
        raise ConfigError(
            f"http_workers: only http and static mode serve in several processes, not "
            f"mode={values['mode']}; leave http_workers unset"
        )
    # The URL is checked only in http mode: functions inherit the environment and may well use a
    # variable called upstream_url for their own purposes.
    if values["mode"] == "http":
        name, text = _raw(_BY_NAME["upstream_url"], environ)
        if not text:
            raise ConfigError(
                "http_upstream_url: not set; mode=http needs the function's server, "
                "e.g. http_upstream_url=http://127.0.0.1:5000"
            )
        _parse(_upstream_url, name, text)


def _raw(setting: Setting, environ: Mapping[str, str]) -> tuple[str, str]:
    """The winning environment variable that is set and non-empty, and its text ("" if none).

    An empty variable counts as unset everywhere, so `function_process=` does not hide
    `fprocess=cat` (Go lets the empty one win) and `port=` means the default port.
    """
    for name in setting.env_names:
        text = environ.get(name, "")
        if text:
            return name, text
    return setting.name, ""


def _read(setting: Setting, environ: Mapping[str, str], default: Any) -> Any:
    """The setting's value from the environment; an empty variable means the default."""
    name, text = _raw(setting, environ)
    if not text:
        return default
    return _parse(setting.parse, name, text)


def _parse(parse: Callable[[str], Any], env_name: str, text: str) -> Any:
    """`parse(text)`, its ValueError turned into a ConfigError naming the variable."""
    try:
        return parse(text)
    except ValueError as error:
        raise ConfigError(f"{env_name}: {error}") from None
