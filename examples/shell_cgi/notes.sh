#!/bin/sh
# A plain CGI/1.1 program in POSIX shell, run by fwatchdog once per request:
#
#     mode=serializing cgi_response=true fprocess=./notes.sh fwatchdog
#
# It reads the request from the RFC 3875 variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING,
# CONTENT_LENGTH, ...) and stdin, and answers with header lines, an empty line, then the body.

case "$REQUEST_METHOD $PATH_INFO" in
"GET /")
    printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
    printf 'Hello %s, this is %s via %s\n' "$REMOTE_ADDR" "$SERVER_SOFTWARE" "$GATEWAY_INTERFACE"
    ;;
"GET /hello")
    name=$(printf '%s' "$QUERY_STRING" | sed -n 's/^\(.*&\)\{0,1\}name=\([^&]*\).*$/\2/p')
    printf 'Content-Type: text/plain; charset=utf-8\r\n\r\n'
    printf 'Hello, %s!\n' "${name:-stranger}"
    ;;
"POST /notes")
    bytes=$(head -c "${CONTENT_LENGTH:-0}" | wc -c | tr -d ' ')
    printf 'Status: 201 Created\r\n'
    printf 'Content-Type: application/json\r\n'
    printf 'Location: /notes/1\r\n'
    printf 'Set-Cookie: last-note=1; Path=/\r\n'
    printf '\r\n'
    printf '{"id": 1, "bytes": %s, "type": "%s"}\n' "$bytes" "$CONTENT_TYPE"
    ;;
"GET /moved")
    # A Location without a Status: the gateway answers 302.
    printf 'Location: /\r\n\r\n'
    ;;
*)
    printf 'Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\n'
    printf 'no route for %s %s\n' "$REQUEST_METHOD" "$PATH_INFO"
    ;;
esac
