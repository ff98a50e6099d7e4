"""Afterburn mode: long-lived processes speaking HTTP/1.1 over stdin and stdout."""
