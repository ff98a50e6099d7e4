"""A Flask app served by fwatchdog in afterburn mode: no WSGI server in the image.

fwatchdog writes each request to this process's stdin and reads the response from its stdout;
fwatchdog.function.serve_wsgi turns them into WSGI calls of `app` (function/handler.py).
"""

from function.handler import app

from fwatchdog.function import serve_wsgi

if __name__ == "__main__":
    serve_wsgi(app)
