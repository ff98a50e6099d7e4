"""One Python handler, run either way: per request (serializing) or long-lived (afterburn).

    python_handler.py once <loops>        read the body on stdin, answer on stdout, exit
    python_handler.py afterburn <loops>   fwatchdog.function.serve: one process, many requests

`loops` is CPU work per request (a sum of squares; 0 for a hello-world handler).
"""

import sys


def handle(body: bytes, loops: int) -> bytes:
    total = 0
    for number in range(loops):
        total += number * number
    return b"hello " + body[:16] + b" " + str(total).encode()


def main() -> None:
    how, loops = sys.argv[1], int(sys.argv[2])
    if how == "once":
        sys.stdout.buffer.write(handle(sys.stdin.buffer.read(), loops))
        return
    from fwatchdog.function import serve

    serve(lambda request: handle(request.body, loops))


main()
