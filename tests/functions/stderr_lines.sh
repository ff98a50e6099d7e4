#!/bin/sh
# Writes its body to stdout and two lines to stderr.
cat
echo "to the log 1" >&2
echo "to the log 2" >&2
