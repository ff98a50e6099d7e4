#!/bin/sh
# Says what a forked function saw of its request (streaming and serializing modes), for the
# differential test: the route and a few of the Http_* fields, then the body as it came.
printf 'method=%s path=%s query=%s host=%s x_test=%s\n' \
    "${Http_Method-}" "${Http_Path-}" "${Http_Query-}" "${Http_Host-}" "${Http_X_Test-}"
printf 'keep_alive=%s connection=%s expect=%s length=%s te=%s\n' \
    "${Http_Keep_Alive-}" "${Http_Connection-}" "${Http_Expect-}" \
    "${Http_Content_Length-}" "${Http_Transfer_Encoding-}"
cat
