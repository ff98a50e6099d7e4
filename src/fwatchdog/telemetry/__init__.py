"""What the watchdog tells operators: the log and the Prometheus metrics."""
