#!/bin/sh
# Writes nothing for $1 seconds (default 5), then one line.
sleep "${1:-5}"
printf 'late\n'
