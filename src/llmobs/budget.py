"""A bound on the bytes all requests in flight may hold at once (bodies, observed copies)."""

from __future__ import annotations


class ByteBudget:
    """Bytes held across all requests; a request that would go past the limit is refused."""

    __slots__ = ("limit", "held")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Hold `size` more bytes if the budget allows; False (nothing held) otherwise."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size
