#!/bin/sh
# Leaves stdin unread for $1 seconds (default 2), then echoes it.
sleep "${1:-2}"
exec cat
