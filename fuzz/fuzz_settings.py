"""Fuzz every setting's parser through load_config: any environment gives a Config or a
ConfigError that names a variable; never another exception."""

import sys

import atheris

with atheris.instrument_imports():
    from fwatchdog.settings.config import SETTINGS, ConfigError, load_config

NAMES = sorted({name for setting in SETTINGS for name in setting.env_names} | {"TMPDIR"})
# Read as a file by jwt_auth: a fuzzed path could name a FIFO or /dev/stdin and block.
FIXED = {"jwt_auth_namespace_file": "/nonexistent/fuzz/namespace"}
SEEDS = ("", "0", "1", "true", "false", "-1", "30s", "1m30s", "http", "static", "cat")


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    environ = {"fprocess": "cat"}
    for _ in range(provider.ConsumeIntInRange(0, 6)):
        name = NAMES[provider.ConsumeIntInRange(0, len(NAMES) - 1)]
        if provider.ConsumeBool():
            value = SEEDS[provider.ConsumeIntInRange(0, len(SEEDS) - 1)]
            value += provider.ConsumeUnicodeNoSurrogates(4)
        else:
            value = provider.ConsumeUnicodeNoSurrogates(40)
        environ[name] = value
    environ.update(FIXED)
    try:
        load_config(environ)
    except ConfigError as error:
        message = str(error)
        assert ":" in message and "\n" not in message, message


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
