"""A small Flask app served as a CGI program: run by fwatchdog once per request.

    mode=serializing cgi_response=true fprocess="python3 app.py" fwatchdog

`wsgiref.handlers.CGIHandler` (standard library) reads the request from the RFC 3875
variables and stdin that fwatchdog provides, and writes `Status:`, the headers, an empty line
and the body to stdout, which fwatchdog turns into the HTTP response. Nothing in the app knows
about fwatchdog: the same file runs behind any CGI server.
"""

from __future__ import annotations

from wsgiref.handlers import CGIHandler

from flask import Flask, Response, jsonify, redirect, request

app = Flask(__name__)

# Each request is a fresh process, so the "database" is whatever the program starts with.
ITEMS = {1: "apple", 2: "pear"}


@app.get("/")
def index() -> str:
    return "Hello from Flask, served through fwatchdog as CGI\n"


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> Response | tuple[Response, int]:
    if item_id not in ITEMS:
        return jsonify(error=f"no item {item_id}"), 404
    return jsonify(id=item_id, name=ITEMS[item_id])


@app.post("/items")
def create_item() -> tuple[Response, int, dict[str, str]] | tuple[Response, int]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return jsonify(error='send JSON like {"name": "plum"}'), 400
    new_id = max(ITEMS) + 1
    return jsonify(id=new_id, name=data["name"]), 201, {"Location": f"/items/{new_id}"}


@app.delete("/items/<int:item_id>")
def delete_item(item_id: int) -> tuple[str, int]:
    return "", 204 if item_id in ITEMS else 404


@app.post("/login")
def login() -> Response:
    """Sets two cookies and sends the client on to /me."""
    user = request.form.get("user", "")
    if not user:
        return Response("user is required\n", status=400, mimetype="text/plain")
    response = redirect("/me")
    response.set_cookie("session", f"token-for-{user}", httponly=True, samesite="Lax")
    response.set_cookie("user", user)
    return response


@app.get("/me")
def me() -> Response | tuple[Response, int]:
    if "session" not in request.cookies:
        return jsonify(error="not logged in"), 401
    return jsonify(user=request.cookies.get("user"), session=request.cookies["session"])


@app.get("/old-home")
def old_home() -> Response:
    return redirect("/", code=301)


@app.get("/search")
def search() -> Response:
    return jsonify(
        q=request.args.get("q", ""),
        page=request.args.get("page", 1, type=int),
        request_id=request.headers.get("X-Request-Id"),
        path=request.path,
    )


@app.post("/echo")
def echo() -> Response:
    return Response(request.get_data(), mimetype=request.mimetype or "application/octet-stream")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("this route always fails")


if __name__ == "__main__":
    CGIHandler().run(app)
