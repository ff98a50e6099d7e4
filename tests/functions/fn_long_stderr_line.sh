#!/bin/sh
# Writes a 100-byte line and then a short one to stderr, to test log_buffer_size.
cat >/dev/null
printf '%0100d\n' 0 | tr 0 a >&2
echo "short line" >&2
