#!/bin/sh
# Writes a short line, waits, writes another: output must reach the client as produced.
printf 'first\n'
sleep "${1:-1}"
printf 'second\n'
