// An afterburn function in Node.js, with no dependencies: the watchdog (mode=afterburn) keeps
// this process running and writes each request to stdin as HTTP/1.1 with a Content-Length;
// the answer goes to stdout as HTTP/1.1 with a Content-Length. Like the published
// nodejs-afterburn client, it reads the head up to the blank line, then exactly
// `Content-Length` body bytes (looked up case-sensitively: the watchdog always sends it).
//
//   mode=afterburn fprocess="node index.js" fwatchdog
"use strict";

function handle(request) {
  // Your function: return { status, headers, body }.
  const body = JSON.stringify({
    method: request.method,
    path: request.path,
    body: request.body.toString("utf8"),
  });
  return { status: 200, headers: { "Content-Type": "application/json" }, body };
}

let buffer = Buffer.alloc(0);
let pending = null; // a parsed head whose body has not fully arrived

function respond({ status = 200, headers = {}, body = "" }) {
  const payload = Buffer.isBuffer(body) ? body : Buffer.from(String(body));
  let head = `HTTP/1.1 ${status} OK\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  head += `Content-Length: ${payload.length}\r\n\r\n`;
  process.stdout.write(Buffer.concat([Buffer.from(head), payload]));
}

function parseHead(text) {
  const lines = text.split("\r\n");
  const [method, target] = lines[0].split(" ");
  const headers = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon)] = line.slice(colon + 1).trim();
  }
  const length = parseInt(headers["Content-Length"], 10); // case-sensitive, as published
  const [path, query = ""] = target.split("?");
  return { method, target, path, query, headers, length };
}

function drain() {
  for (;;) {
    if (pending === null) {
      const end = buffer.indexOf("\r\n\r\n");
      if (end < 0) return;
      pending = parseHead(buffer.subarray(0, end).toString("latin1"));
      buffer = buffer.subarray(end + 4);
    }
    if (buffer.length < pending.length) return;
    const request = { ...pending, body: buffer.subarray(0, pending.length) };
    buffer = buffer.subarray(pending.length);
    pending = null;
    try {
      respond(handle(request));
    } catch (error) {
      console.error(error);
      respond({ status: 500, body: "Internal Error\n" });
    }
  }
}

process.stdin.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  drain();
});
process.stdin.on("end", () => process.exit(0));
