"""Bearer-token auth from the ``authorization`` call metadata (constant-time compare)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any


class TokenCheck:
    """``ok(metadata)`` is True when auth is off or the call carries ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.enabled = bool(token)
        self._expected = f"Bearer {token}".encode()

    def ok(self, metadata: Iterable[Any] | None) -> bool:
        if not self.enabled:
            return True
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(given, self._expected)
        return False
