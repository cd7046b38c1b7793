"""The architecture contracts (pyproject.toml [tool.importlinter], run by
`make lint`) hold on the project, and they do catch a wrong import.

Through lint-imports itself, as `make lint` runs it: on the project; on a copy
of the project's modules with one wrong import added, under the project's own
contracts; and on a tiny fixture package (tests/fixtures/import_contracts/)
with its own config whose gateway imports redis and whose servicekit imports
a service. No stack needed: import-linter reads the source, imports nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servicekit.settings import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
FIXTURE = Path(__file__).parent / "fixtures" / "import_contracts"
# The root packages of [tool.importlinter], copied for the wrong-import runs.
ROOT_PACKAGES = ("petitions", "servicekit", "services", "loadtests", "tests", "deploy")

# Every contract of pyproject.toml by its name, as lint-imports prints it
# (it wraps long names; see _contract_lines).
CONTRACTS = {
    "foundations": "The contracts package and servicekit import no service, load test, test or deployment code",
    "services-independent": "A service imports no other service's package",
    "gateway-client-side": "The gateway imports only the contracts and servicekit's client-side parts (no store)",
    "pure-domain": "Domain rules import no gRPC, Kafka, Redis or Cassandra",
    "operator-tools": (
        "The CLI and dev-secrets import no service's modules but its settings and the named operator jobs"
    ),
    "loadtests-public": "Load tests import only the contracts, servicekit and the public client kit",
}


def _lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _verdicts(output: str) -> dict[str, str]:
    """Each contract's name → KEPT or BROKEN, from lint-imports' summary,
    whose lines wrap at 80 columns (a name may span two lines)."""
    summary = output.split("Contracts:", 1)[0]
    joined = " ".join(line.strip() for line in summary.splitlines())
    verdicts: dict[str, str] = {}
    for name in [*CONTRACTS.values(), *FIXTURE_CONTRACTS]:
        for verdict in ("KEPT", "BROKEN"):
            if f"{name} {verdict}" in joined:
                verdicts[name] = verdict
    return verdicts


FIXTURE_CONTRACTS = (
    "Fixture: servicekit imports no service",
    "Fixture: the gateway imports no store",
    "Fixture: a service imports no other service",
)


def test_the_project_keeps_every_contract() -> None:
    result = _lint_imports(REPO_ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _verdicts(output) == dict.fromkeys(CONTRACTS.values(), "KEPT"), output
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in output, output


def test_a_fixture_whose_gateway_imports_redis_breaks_its_contracts() -> None:
    result = _lint_imports(FIXTURE)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert _verdicts(output) == {
        "Fixture: servicekit imports no service": "BROKEN",
        "Fixture: the gateway imports no store": "BROKEN",
        "Fixture: a service imports no other service": "KEPT",
    }, output
    # The report names the offending import, line and all.
    assert "shop.services.gateway.cache -> redis (l.3)" in output, output
    assert "shop.servicekit.helpers -> shop.services.tally.counting (l.3)" in output, output


@pytest.mark.parametrize(
    ("module", "wrong_import", "contract", "reported"),
    [
        (
            "servicekit/text.py",
            "from services.tally import counters",
            "foundations",
            "servicekit.text -> services.tally.counters",
        ),
        ("services/gateway/caching.py", "import redis", "gateway-client-side", "services.gateway.caching -> redis"),
        (
            "services/gateway/caching.py",
            "from services.tally import counters",
            "services-independent",
            "services.gateway.caching -> services.tally.counters",
        ),
        (
            "services/petitions/lifecycle.py",
            "import grpc",
            "pure-domain",
            "services.petitions.lifecycle -> grpc",
        ),
        (
            "services/tally/threshold_rules.py",
            "import redis",
            "pure-domain",
            "services.tally.threshold_rules -> redis",
        ),
        (
            "services/dev_secrets.py",
            "from services.signing import server",
            "operator-tools",
            "services.dev_secrets -> services.signing.server",
        ),
        ("loadtests/bench.py", "from tests import harness", "loadtests-public", "loadtests.bench -> tests.harness"),
    ],
)
def test_the_project_contracts_catch_a_wrong_import(
    tmp_path: Path, module: str, wrong_import: str, contract: str, reported: str
) -> None:
    """A copy of the project's modules with one wrong import added, checked
    under the project's own pyproject.toml: the contract it breaks is
    reported broken, naming the import."""
    for package in ROOT_PACKAGES:
        shutil.copytree(
            REPO_ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "results", "fixtures"),
        )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{wrong_import}  # the deliberate wrong import\n")

    result = _lint_imports(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert _verdicts(output).get(CONTRACTS[contract]) == "BROKEN", output
    assert reported in output, output
