"""Processes the watchdog starts: spawning, pipes, the long-lived child of http mode."""
