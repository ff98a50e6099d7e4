"""Fuzz the multipart decoder: any body, cut anywhere, is decoded or refused with FormError;
files land only in the form's own directory, which close() removes."""

import os
import sys

import atheris

with atheris.instrument_imports():
    from fwatchdog.modes.forking.multipart import Form, FormError

BOUNDARY = "fuzzboundary"


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    if provider.ConsumeBool():
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
    else:
        # Header values reach the mode as latin-1 text: one character per byte.
        content_type = provider.ConsumeBytes(60).decode("latin-1")
    cut = provider.ConsumeIntInRange(0, 1 << 16)
    body = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        form = Form(content_type, max_parts=8, max_fields_size=4096)
    except FormError:
        return
    directory = form.directory
    try:
        try:
            form.feed(body[:cut])
            form.feed(body[cut:])
            form.finish()
        except FormError:
            return
        env = form.environment()
        for line in env["Http_Form_Files"].splitlines():
            path = os.path.realpath(os.path.join(directory, line))
            assert path.startswith(os.path.realpath(directory) + os.sep), line
    finally:
        form.close()
        assert not os.path.exists(directory)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
