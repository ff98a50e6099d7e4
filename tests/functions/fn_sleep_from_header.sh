#!/bin/sh
# Reads its input, writes `first`, sleeps for the X-Sleep request header's seconds (default 0),
# then writes `second`: a request that stays in flight as long as the test asks.
cat >/dev/null
printf 'first\n'
sleep "${Http_X_Sleep:-0}"
printf 'second\n'
