#!/bin/sh
# The request body is on stdin; what goes to stdout is the response body.
# Http_Method, Http_Path, Http_Query and Http_<Header> describe the request.
printf 'Hello from a program: %s %s\n' "$Http_Method" "${Http_Path:-/}"
wc -c | sed 's/^/bytes received: /'
