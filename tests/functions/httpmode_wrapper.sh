#!/bin/sh
# Runs the given server in the background and waits for it: a group leader that is not the
# server itself, as with shell entrypoints.
"$@" &
wait
