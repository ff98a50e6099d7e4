"""http mode: a reverse proxy to the function's own long-lived HTTP server."""
