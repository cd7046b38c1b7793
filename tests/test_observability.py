"""What an operator sees: the alerting rules pass promtool's checks and their
own unit tests, the dashboard and the rules name only metrics the services
define, the services count their decisions, and a real Prometheus scraping a
test session's services sees signing, the tally's lag and the recording
rules' results."""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.metrics import MetricWrapperBase

import servicekit.metric_defs
import services.gateway.metric_defs
import services.identity.metrics
import services.petitions.metric_defs
import services.signing.metric_defs
import services.tally.metric_defs
from deploy.local.fetch import FetchFailed
from deploy.local.prometheus import PrometheusTools, ensure_prometheus
from servicekit.errors import DomainError, ErrorKind, invalid
from services.identity.metrics import verification_outcome
from services.signing.metric_defs import sign_refusal_label
from tests.errors import rejection
from tests.harness import REPO, ServiceProcess, free_port, wait_ready
from tests.system import SystemClient
from tests.waiting import eventually

OBSERVABILITY = REPO / "deploy" / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules.yml"
RULE_TESTS = OBSERVABILITY / "prometheus" / "rules.test.yml"
LOCAL_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "petition-intake.json"
# Where the services name their metrics (STYLE.md, lesson 6).
METRIC_MODULES = (
    servicekit.metric_defs,
    services.gateway.metric_defs,
    services.identity.metrics,
    services.petitions.metric_defs,
    services.signing.metric_defs,
    services.tally.metric_defs,
)
SESSION_JOBS = ("identity", "signing", "tally")
# Grafana's own variables, given the values a short test can evaluate.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m"}
PROMETHEUS_START_SECONDS = 20.0
SCRAPE_WAIT_SECONDS = 30.0
MIN_SIGNATURES = 12
SIGN_RATE = 'sum(rate(petitions_rpc_requests_total{method="Sign"}[1m]))'


@pytest.fixture(scope="module")
def tools() -> PrometheusTools:
    try:
        return ensure_prometheus()
    except FetchFailed as error:
        pytest.fail(f"Debian's prometheus package could not be installed: {error}")


def promtool(tools: PrometheusTools, *args: str | Path) -> str:
    result = subprocess.run(
        [str(tools.promtool), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


def test_the_rules_pass_promtool_check_and_their_unit_tests(tools: PrometheusTools) -> None:
    assert "SUCCESS" in promtool(tools, "check", "rules", RULES)
    assert "SUCCESS" in promtool(tools, "test", "rules", RULE_TESTS)
    assert "SUCCESS" in promtool(tools, "check", "config", LOCAL_CONFIG)


def defined_samples() -> set[str]:
    """Every sample name the services' metric modules can expose."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names: set[str] = set()
    for module in METRIC_MODULES:
        for metric in vars(module).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            for family in metric.describe():
                names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if target.get("expr")
    ]


def recorded_names() -> set[str]:
    return set(re.findall(r"^\s*- record: (\S+)\s*$", RULES.read_text(), flags=re.MULTILINE))


def test_the_dashboard_and_rules_name_only_metrics_that_exist() -> None:
    defined, recorded = defined_samples(), recorded_names()
    expressions = [*dashboard_expressions(), RULES.read_text()]
    used = {name for text in expressions for name in re.findall(r"\bpetitions_[a-z_]+[a-z]", text)}
    used_recorded = {name for text in expressions for name in re.findall(r"\bpetitions:[a-z0-9_:]+[a-z0-9]", text)}
    assert used - defined == set(), "named in the dashboard or rules, defined by no service"
    assert used_recorded - recorded == set(), "recorded series the rules do not define"
    assert len(dashboard_expressions()) > 20


def test_refusals_become_bounded_labels() -> None:
    assert sign_refusal_label("PETITION_NOT_FOUND") == "PETITION_NOT_FOUND"
    assert sign_refusal_label("A_REASON_ADDED_LATER") == "OTHER"
    assert [
        verification_outcome(error)
        for error in (
            DomainError(ErrorKind.PERMISSION_DENIED, "BLOCKED", "blocked"),
            DomainError(ErrorKind.RESOURCE_EXHAUSTED, "RATE_LIMITED", "slow down"),
            invalid("email", "is required"),
            DomainError(ErrorKind.UNAVAILABLE, "MAIL_UNAVAILABLE", "no mail"),
            DomainError(ErrorKind.UNAUTHENTICATED, "CODE_MISMATCH", "wrong code"),
            DomainError(ErrorKind.RESOURCE_EXHAUSTED, "TOO_MANY_ATTEMPTS", "too many"),
        )
    ] == ["blocked", "limited", "invalid", "unavailable", "rejected", "rejected"]


def sample_line(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def outcome(reason: str) -> str:
    return sample_line("petitions_signing_sign_outcomes_total", reason=reason)


def verification(method: str, result: str) -> str:
    return sample_line("petitions_identity_verifications_total", method=method, outcome=result)


@pytest.mark.stack
def test_signing_and_identity_count_their_decisions(system: SystemClient) -> None:
    signing_samples = [
        outcome("accepted"),
        outcome("accepted_replay"),
        outcome("already_signed"),
        outcome("PETITION_NOT_FOUND"),
        "petitions_signing_publish_ack_seconds_count",
        "petitions_signing_sends_awaiting_ack_count",
    ]
    identity_samples = [
        verification("oidc", "issued"),
        verification("oidc", "rejected"),
        verification("email", "invalid"),
        verification("email", "blocked"),
    ]
    # Created first: its administrator's staff credential is an OIDC
    # verification of identity's too, not one of those counted below.
    petition = system.create_petition("Counted")
    before = {sample: system.metric_value("signing", sample) for sample in signing_samples}
    before |= {sample: system.metric_value("identity", sample) for sample in identity_samples}

    credential = system.credential(f"counted-{uuid.uuid4().hex[:8]}").token
    system.sign(credential, petition.id, idempotency_key="first-request-key")
    system.sign(credential, petition.id, idempotency_key="first-request-key")
    system.sign(credential, petition.id)
    with pytest.raises(grpc.RpcError) as missing:
        system.sign(credential, f"missing-{uuid.uuid4().hex[:8]}")
    assert rejection(missing.value).reason == "PETITION_NOT_FOUND"
    for refused in (
        # Well-formed (a text that is not a JWS at all is "invalid"), but
        # from no trusted issuer: a proof that failed.
        lambda: system.exchange("eyJhbGciOiJub25lIn0.e30."),
        lambda: system.begin_email("not an address"),
        lambda: system.begin_email(f"x-{uuid.uuid4().hex[:8]}@blocked.example"),
    ):
        with pytest.raises(grpc.RpcError):
            refused()

    expected = {
        outcome("accepted"): 1,
        outcome("accepted_replay"): 1,
        outcome("already_signed"): 1,
        outcome("PETITION_NOT_FOUND"): 1,
        # Only the first Sign reached Kafka.
        "petitions_signing_publish_ack_seconds_count": 1,
        "petitions_signing_sends_awaiting_ack_count": 1,
        verification("oidc", "issued"): 1,
        verification("oidc", "rejected"): 1,
        verification("email", "invalid"): 1,
        verification("email", "blocked"): 1,
    }
    after = {sample: system.metric_value("signing", sample) for sample in signing_samples}
    after |= {sample: system.metric_value("identity", sample) for sample in identity_samples}
    assert {sample: after[sample] - before[sample] for sample in expected} == expected
    assert system.metric_value("signing", "petitions_signing_publishes_in_flight") == 0


@dataclass(frozen=True)
class PrometheusApi:
    """The HTTP API of a running Prometheus server."""

    url: str

    def get(self, path: str, **parameters: str) -> Any:
        query = f"?{urllib.parse.urlencode(parameters)}" if parameters else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"GET {path} {parameters}: {error.code} {error.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's series, each with its labels and value."""
        data = self.get("/api/v1/query", query=expression)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expression: str) -> list[float]:
        return [float(series["value"][1]) for series in self.query(expression)]

    def wait_for(self, expression: str, accept: Any, timeout: float = SCRAPE_WAIT_SECONDS) -> list[float]:
        """Polls an instant query until accept(values) holds; returns them."""
        seen: list[float] = []

        # Wrapped in a tuple so that values accepted empty still end the wait.
        def accepted() -> tuple[list[float]] | None:
            nonlocal seen
            seen = self.values(expression)
            return (seen,) if accept(seen) else None

        return eventually(accepted, timeout, interval=0.5, message=lambda: f"{expression} was {seen}")[0]


def scrape_config(targets: Mapping[str, int]) -> str:
    """A configuration scraping each job's one target every second, with the
    repository's rules. JSON, which Prometheus reads as the YAML it is."""
    return json.dumps(
        {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        },
        indent=2,
    )


@contextlib.contextmanager
def running_prometheus(tools: PrometheusTools, work_dir: Path, targets: Mapping[str, int]) -> Iterator[PrometheusApi]:
    """A Prometheus server of this test's own: its configuration, storage and
    log under work_dir, its web listener on a free port; always stopped."""
    config = work_dir / "prometheus.yml"
    config.write_text(scrape_config(targets))
    promtool(tools, "check", "config", config)
    port = free_port()
    log_path = work_dir / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(tools.server),
                f"--config.file={config}",
                f"--storage.tsdb.path={work_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServiceProcess("prometheus", process, log_path)
    try:
        api = PrometheusApi(f"http://127.0.0.1:{port}")
        wait_ready(server, f"{api.url}/-/ready", PROMETHEUS_START_SECONDS)
        yield api
    finally:
        server.stop()


def sign_some(system: SystemClient, petition_id: str, count: int) -> None:
    for _ in range(count):
        system.sign(system.credential(f"observed-{uuid.uuid4().hex[:8]}").token, petition_id)


@pytest.mark.stack
def test_prometheus_sees_signing_the_tally_lag_and_the_recording_rules(
    system: SystemClient, tools: PrometheusTools, tmp_path: Path
) -> None:
    ports = system.namespace.ports
    targets = {job: ports[f"{job}-metrics"] for job in SESSION_JOBS}
    with running_prometheus(tools, tmp_path, targets) as prometheus:
        prometheus.wait_for('up{job=~"identity|signing|tally"} == 1', lambda up: len(up) == len(SESSION_JOBS))
        petition = system.create_petition("Observed")
        # A rate needs the counter to move between two scrapes, so keep
        # signing, a few at a time, until Prometheus has seen it move.
        signed = 0

        def signed_and_seen() -> bool:
            nonlocal signed
            sign_some(system, petition.id, 3)
            signed += 3
            return signed >= MIN_SIGNATURES and any(v > 0 for v in prometheus.values(SIGN_RATE))

        eventually(
            signed_and_seen,
            SCRAPE_WAIT_SECONDS,
            interval=0.3,
            message=lambda: f"Prometheus saw no Sign rate after {signed} signatures",
        )

        assert prometheus.query('petitions_tally_consumer_lag_messages{job="tally"}'), "no lag series per partition"
        assert prometheus.query('petitions_tally_lag_seconds{job="tally"}'), "no lag in seconds"
        prometheus.wait_for("petitions:sign_requests:rate1m", lambda v: len(v) == 1 and v[0] > 0)
        prometheus.wait_for("petitions:sign_latency_seconds:p99_5m", lambda v: len(v) == 1 and 0 < v[0] < math.inf)
        prometheus.wait_for("petitions:signing_publish_ack_seconds:p99_5m", lambda v: len(v) == 1 and v[0] > 0)
        # Other tests of the session may have met a stopped broker: any ratio
        # will do, as long as there is one.
        prometheus.wait_for("petitions:sign_server_errors:ratio_rate5m", lambda v: len(v) == 1 and 0 <= v[0] <= 1)
        prometheus.wait_for("petitions:tally_consumer_lag_messages:sum", lambda v: len(v) == 1 and v[0] >= 0)
        prometheus.wait_for("petitions:tally_lag_seconds:max", lambda v: len(v) == 1 and v[0] >= 0)

        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == len(recorded_names()) + RULES.read_text().count("- alert: ")
        assert [r["name"] for r in rules if r["health"] != "ok"] == [], "rules failing to evaluate"
        for expression in dashboard_expressions():
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            prometheus.query(expression)
