"""An afterburn function on fwatchdog.function.serve_wsgi: a small Flask app."""

from flask import Flask, Response, request, stream_with_context

from fwatchdog.function import serve_wsgi

app = Flask(__name__)


@app.post("/echo")
def echo() -> Response:
    print("flask saw", request.path)
    return Response(request.get_data(), status=202, headers={"X-Flask": "yes"})


@app.get("/hello/<name>")
def hello(name: str) -> dict[str, str]:
    return {"hello": name, "q": request.args.get("q", "")}


@app.get("/stream")
def stream() -> Response:
    def parts():
        for index in range(3):
            yield f"line {index}\n"

    return Response(stream_with_context(parts()), mimetype="text/plain")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("flask handler failed on purpose")


serve_wsgi(app)
