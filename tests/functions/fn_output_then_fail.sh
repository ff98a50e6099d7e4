#!/bin/sh
# Reads its input, writes a line, then fails: the status is already sent when it exits.
cat >/dev/null
printf 'partial output\n'
exit 1
