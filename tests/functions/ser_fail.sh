#!/bin/sh
# Reads its input, writes a line to each stream, exits with the code given as $1 (default 3).
cat >/dev/null
echo "partial output"
echo "something went wrong" >&2
exit "${1:-3}"
