#!/bin/sh
# Writes 3 MB before reading any input, then counts the input: a deadlock if the watchdog
# waited to finish writing stdin before reading stdout.
head -c 3000000 /dev/zero
wc -c
