#!/bin/sh
# Starts a background child that outlives it, writes the child's pid to the file named by $1,
# then sleeps: exec_timeout must kill the whole process group, the child too.
sleep 30 &
echo "$!" >"$1"
sleep 5
