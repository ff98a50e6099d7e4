"""A transport with no peer, for the harnesses that drive a connection object directly: it
takes writes and closes, and notes a write made after the connection closed or half-closed."""

import asyncio


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.eof = False
        self.written_after_close = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written_after_close |= self.closing or self.eof

    def writelines(self, parts: object) -> None:  # type: ignore[override]
        self.written_after_close |= self.closing or self.eof

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
