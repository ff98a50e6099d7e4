"""An afterburn function on fwatchdog.function.serve: one handler, several kinds of answer."""

import os

from fwatchdog.function import Request, Response, serve


def handle(request: Request) -> object:
    print("handler saw", request.method, request.path)  # must land in the log, not the stream
    if request.path == "/json":
        return {"method": request.method, "query": request.query, "body": request.text}
    if request.path == "/bytes":
        return bytes(range(256))
    if request.path == "/status":
        return Response("made", status=201, headers={"X-Made": "yes", "Content-Type": "text/x"})
    if request.path == "/raise":
        raise ValueError("the handler failed on purpose")
    if request.path == "/pid":
        return str(os.getpid())
    if request.path == "/header":
        return request.headers.get("X-Thing", "none")
    if request.path == "/cpu":
        total = 0
        for number in range(int(request.query.get("n", ["20000"])[0])):
            total += number * number
        return str(total)
    return "hello " + request.text


serve(handle)
