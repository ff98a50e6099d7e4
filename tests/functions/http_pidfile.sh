#!/bin/sh
# Writes its PID to "$PIDFILE", then becomes the given command (same PID), or sleeps 30 s.
echo $$ >"$PIDFILE.tmp"
mv "$PIDFILE.tmp" "$PIDFILE"
if [ "$#" -eq 0 ]; then
    exec sleep 30
fi
exec "$@"
