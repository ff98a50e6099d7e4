#!/bin/sh
# Reads its input, writes its PID to "$PIDFILE", then sleeps 30 s (to be killed).
cat >/dev/null
echo $$ >"$PIDFILE.tmp"
mv "$PIDFILE.tmp" "$PIDFILE"
exec sleep 30
