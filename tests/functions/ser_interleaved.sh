#!/bin/sh
# Alternates stdout and stderr lines, for combine_output's ordering.
cat >/dev/null
echo "out 1"
echo "err 1" >&2
echo "out 2"
echo "err 2" >&2
exit "${1:-0}"
