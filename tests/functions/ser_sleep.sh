#!/bin/sh
# Writes a line, then sleeps in a child that holds stdout open (only a group kill ends it).
echo "before the sleep"
sleep 30
echo "after the sleep"
