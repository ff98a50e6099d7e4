"""An afterburn function in Python on fwatchdog.function (standard library only).

mode=afterburn fprocess="python3 handler.py" afterburn_processes=2 fwatchdog
"""

from fwatchdog.function import Request, Response, serve


def handle(request: Request) -> object:
    if request.method == "POST":
        return Response({"received": len(request.body)}, status=201)
    name = request.query.get("name", ["world"])[0]
    print(f"greeting {name}")  # goes to the watchdog's log
    return f"Hello, {name}!\n"


serve(handle)
