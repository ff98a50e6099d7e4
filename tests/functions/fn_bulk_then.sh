#!/bin/sh
# Writes $1 bytes of zeros (bulk output, several pipe-fulls), then runs the rest of its
# arguments: `exit 1`, `sleep 60`, ...
head -c "$1" /dev/zero
shift
eval "$@"
