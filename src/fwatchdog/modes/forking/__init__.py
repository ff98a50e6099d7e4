"""Modes that fork the function per request (streaming, serializing) and what they feed it."""
