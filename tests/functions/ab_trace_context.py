"""An afterburn function on fwatchdog.function that answers with the W3C trace context headers
it was given (the tracing tests check they name the watchdog's span)."""

from fwatchdog.function import Request, serve


def handle(request: Request) -> object:
    return {
        "traceparent": request.headers.get("traceparent"),
        "tracestate": request.headers.get("tracestate"),
    }


serve(handle)
