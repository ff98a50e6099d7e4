"""An afterburn function on fwatchdog.function that says what it saw of each request (the
differential test compares it across connections); /early answers without looking at the
body (the lingering-close tests)."""

from fwatchdog.function import Request, serve

SHOWN = ("host", "x-test", "keep-alive", "connection", "expect", "content-length")


def handle(request: Request) -> object:
    if request.path == "/early":
        return "early"
    return {
        "method": request.method,
        "target": request.target,
        "path": request.path,
        "query": request.query_string,
        "headers": {name: request.headers.get(name) for name in SHOWN},
        "body": request.body.decode("latin-1"),
    }


serve(handle)
