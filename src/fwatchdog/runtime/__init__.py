"""The server's life: bind, serve, drain, exit; worker processes; the event loop; deadlines."""
