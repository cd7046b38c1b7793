"""The Locust load-test scenarios and the settings both the runner and the
Locust processes read (plain data: no grpc, no gevent, no locust imports, so
the runner can use it without Locust's monkey-patching).

The runner (`loadtests.run_locust`) resolves the settings once, creates the
scenario's petitions, and hands everything to the Locust processes through
`PETITIONS_LOADTEST_*` environment variables, which is how a master and its
workers, started as separate processes, see the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.settings import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "loadtests" / "results"


class LoadTestSettings(BaseSettings):
    """Where the system under test is and what this run does.

    The addresses and secrets directory use the same variables as the
    services and the CLI (`PETITIONS_SIGNING_ADDRESS`, …), so a test
    session's environment points a run at that session's services."""

    model_config = SettingsConfigDict(env_prefix="PETITIONS_", frozen=True, extra="ignore")

    signing_address: str = "127.0.0.1:50062"
    tally_address: str = "127.0.0.1:50063"
    secrets_dir: Path = REPO_ROOT / ".run" / "secrets"
    # Where a run's petitions are created: the petitions service, by an
    # administrator whose staff credential identity issues for a token of
    # the identified dev provider (make up's, or a test session's).
    identity_address: str = "127.0.0.1:50061"
    petitions_address: str = "127.0.0.1:50064"
    devidp_identified_url: str = "http://127.0.0.1:8462"
    devidp_audience: str = "petitions-dev"
    loadtest_staff_persona: str = "staff-admin"

    # Set by the runner for the Locust processes.
    loadtest_scenario: str = "steady"
    loadtest_run_id: str = ""
    loadtest_petitions: tuple[str, ...] = ()
    loadtest_users: int = 0  # 0: the scenario's default
    loadtest_seconds: float = 30.0
    loadtest_run_dir: Path = RESULTS_DIR
    # Sign calls wait this long; long, because a Sign that timed out here but
    # was accepted by the service would make the tally check disagree.
    loadtest_rpc_timeout: float = 10.0


# How a virtual user retries a Sign whose outcome it does not know yet
# (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), with the same
# idempotency key; the services' retry_after is 1 to 2 s.
SIGN_ATTEMPTS = 5
RETRY_AFTER_SECONDS = 1.0


def sign_task_bound(settings: LoadTestSettings) -> float:
    """The longest one Sign task can take, every attempt timing out: a run
    that gives its users this long to finish at the end leaves no call in
    flight."""
    return SIGN_ATTEMPTS * (settings.loadtest_rpc_timeout + RETRY_AFTER_SECONDS)


# Each Locust process that runs users writes one ledger file of what its
# users saw (LEDGER_GLOB in the run directory); the master runs none.
LEDGER_GLOB = "ledger-*.json"


@dataclass(frozen=True)
class Scenario:
    """One shape of load.

    users: the peak number of virtual users (signers and readers together);
    ramp_seconds: how fast they arrive; petitions: how many the runner
    creates (the first is the hot one); hot_share: the share of Signs that
    go to the hot petition, the rest spread over the others with a long
    tail; signer_weight / reader_weight: how users split between signers
    and readers (GetTally only); sign_rate / read_rate: calls
    per second of each virtual user; persons: 0 for a new person at each
    Sign, else the size of a fixed crowd that signs again and again."""

    name: str
    description: str
    users: int
    ramp_seconds: float
    petitions: int
    hot_share: float
    signer_weight: int
    reader_weight: int
    sign_rate: float
    read_rate: float
    persons: int = 0

    @property
    def user_classes(self) -> list[str]:
        """The locustfile's user classes this scenario runs."""
        return ["SignerUser"] + (["ReaderUser"] if self.reader_weight else [])


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="national-peak",
            description="flash crowd: all users within 3 s; 90 % of Signs on one hot petition, a long tail on 5 "
            "others; 3 readers (GetTally on the hot petition) per signer",
            users=400,
            ramp_seconds=3.0,
            petitions=6,
            hot_share=0.9,
            signer_weight=1,
            reader_weight=3,
            sign_rate=2.0,
            read_rate=2.0,
        ),
        Scenario(
            name="steady",
            description="constant rate: every user signs once a second as a new person; 1 reader per 4 signers",
            users=100,
            ramp_seconds=1.0,
            petitions=1,
            hot_share=1.0,
            signer_weight=4,
            reader_weight=1,
            sign_rate=1.0,
            read_rate=1.0,
        ),
        Scenario(
            name="duplicate-storm",
            # About 1 Sign/s per person: signing's per-person rate limit
            # (burst 30, 60/min) would answer a harder storm with
            # RESOURCE_EXHAUSTED, which is its job but not what this tests.
            description="200 persons sign the same petition again and again, about once a second each: one "
            "ACCEPTED each, then ALREADY_SIGNED",
            users=100,
            ramp_seconds=1.0,
            petitions=1,
            hot_share=1.0,
            signer_weight=1,
            reader_weight=0,
            sign_rate=2.0,
            read_rate=1.0,
            persons=200,
        ),
    )
}
