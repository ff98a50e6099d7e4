#!/usr/bin/env python3
"""An afterburn function speaking the protocol by hand, as the published clients do.

It reads the request head up to the blank line, looks up `Content-Length` case-sensitively,
reads exactly that many body bytes and answers with a Content-Length. Paths pick behaviours:
/chunked answers chunked, /stream sends chunks 0.1 s apart, /sleep hangs, /die exits 3 mid-
request, /garbage writes something that is not HTTP, /unframed has no length, /pid gives the
process id, /status/NNN answers NNN; anything else echoes method, target and body.
"""

import os
import sys
import time

stdin = sys.stdin.buffer
stdout = sys.stdout.buffer


def answer(status, body, headers=()):
    head = [f"HTTP/1.1 {status} Whatever"]
    head += [f"{name}: {value}" for name, value in headers]
    head.append(f"Content-Length: {len(body)}")
    stdout.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    stdout.flush()


while True:
    line = stdin.readline()
    if not line:
        break
    method, target, _version = line.decode().split(" ")
    headers = {}
    while (line := stdin.readline()) not in (b"\r\n", b"\n", b""):
        name, value = line.decode().rstrip("\r\n").split(":", 1)
        headers[name] = value.strip()
    body = stdin.read(int(headers["Content-Length"]))  # KeyError without it, like Node's
    sys.stderr.write(f"raw function got {method} {target}\n")
    sys.stderr.flush()
    if target == "/chunked":
        stdout.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n")
        stdout.write(b"Content-Type: text/x-chunks\r\n\r\n")
        stdout.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        stdout.flush()
    elif target == "/stream":
        stdout.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for index in range(3):
            stdout.write(b"%x\r\n" % 6 + f"part {index}".encode()[:6] + b"\r\n")
            stdout.flush()
            time.sleep(0.3)
        stdout.write(b"0\r\n\r\n")
        stdout.flush()
    elif target == "/sleep":
        time.sleep(60)
    elif target == "/die":
        sys.stderr.write("dying on purpose\n")
        sys.exit(3)
    elif target == "/garbage":
        stdout.write(b"this is not HTTP at all\r\n\r\n")
        stdout.flush()
    elif target == "/unframed":
        stdout.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno length here")
        stdout.flush()
    elif target == "/pid":
        answer(200, str(os.getpid()).encode())
    elif target.startswith("/status/"):
        answer(int(target.rsplit("/", 1)[1]), b"as asked", [("X-Status", "set")])
    else:
        answer(
            200,
            method.encode() + b" " + target.encode() + b" " + body,
            [("Content-Type", "text/plain"), ("X-Header-Names", ",".join(headers))],
        )
