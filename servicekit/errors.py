"""Domain errors: what went wrong, in terms a caller can act on.

Domain code raises these without knowing about gRPC; servicekit.grpc_server
maps each kind to one status code, with google.rpc details, in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class DomainError(Exception):
    """An error that is part of the API.

    reason is a stable UPPER_SNAKE code a front end can switch on (it becomes
    google.rpc.ErrorInfo.reason); message is for people.
    """

    kind: ErrorKind
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = field(default=())
    retry_after_seconds: float | None = None

    def __str__(self) -> str:
        return f"{self.kind.value} {self.reason}: {self.message}"


def not_yet_available(rpc: str) -> DomainError:
    """An RPC that is in the contract but not served by this version."""
    return DomainError(ErrorKind.UNIMPLEMENTED, "NOT_IMPLEMENTED", f"{rpc} is not available in this version")


def invalid(field_name: str, description: str, reason: str = "INVALID_FIELD") -> DomainError:
    """A request field that is wrong; the message names the field."""
    return DomainError(
        ErrorKind.INVALID_ARGUMENT,
        reason,
        f"{field_name}: {description}",
        violations=(FieldViolation(field_name, description),),
    )
