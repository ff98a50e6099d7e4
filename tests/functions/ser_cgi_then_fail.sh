#!/bin/sh
# A valid CGI header block and body, then a non-zero exit.
cat >/dev/null
printf 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nlooked fine\n'
exit 2
