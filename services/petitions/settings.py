"""The petitions service's settings (PETITIONS_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from servicekit.settings import ServiceSettings


class PetitionsSettings(ServiceSettings):
    grpc_address: str = "127.0.0.1:50064"
    metrics_port: int = 9166
    # Where the credentials' verification keys come from.
    identity_address: str = "127.0.0.1:50061"
    # How often petitions past their deadline are closed (every process
    # does it; the conditional write lets one win).
    deadline_check_seconds: float = 30.0
    # A change whose audit entry or events did not reach the stores at once
    # (a broker outage) is finished by the sweeper after this long.
    outbox_retry_seconds: float = 5.0
    # The legislature new petitions belong to until an administrator closes
    # it (then the one named in CloseLegislature; kept in Cassandra).
    legislature: str = "17"
    # Petition types, rejection reasons and committees: the packaged files
    # (services/petitions/data/) unless these name others.
    types_file: Path | None = None
    committees_file: Path | None = None
    # A change that keeps meeting concurrent changes is given up after this
    # many attempts (FAILED_PRECONDITION VERSION_CONFLICT).
    max_change_attempts: int = 5
    publish_timeout_seconds: float = 10.0
