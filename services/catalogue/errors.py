"""The catalogue's errors, phrased once for every service that reads it."""

from __future__ import annotations

from servicekit.errors import DomainError, ErrorKind


def petition_not_found(petition_id: str) -> DomainError:
    return DomainError(ErrorKind.NOT_FOUND, "PETITION_NOT_FOUND", f"petition {petition_id!r} does not exist")
