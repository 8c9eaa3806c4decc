"""The domain's one error type, shared by the services of plain and secure rounds."""

from __future__ import annotations


class FederationError(Exception):
    """A request the domain refuses; the message says why and what to do."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status
