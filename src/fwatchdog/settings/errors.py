"""Errors that cross layers: a mode raises them, the server turns them into an exit."""


class StartupError(Exception):
    """The watchdog cannot start serving; the message says what to change."""
