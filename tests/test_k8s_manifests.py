"""deploy/k8s/, checked offline: both overlays render, every object passes a
strict schema (kubernetes-validate's for the built-in kinds, the operators'
CRDs converted by tools/crd_schemas.py for the custom resources; kubeconform
too when it is built), and the policies of tools/k8s_check.py hold. Each
policy is also handed a deliberately broken manifest from
tests/fixtures/k8s/ and must catch it. No stack, no cluster, no network:
each overlay is rendered once per session."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.local import versions
from tools import crd_schemas, k8s_check

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
Obj = dict[str, Any]


@pytest.fixture(scope="session", params=k8s_check.OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_rendered: dict[str, list[Obj]] = {}


def rendered_overlay(name: str) -> list[Obj]:
    """One `kubectl kustomize` per overlay per session; skipped, saying what
    is not checked, where kubectl is missing."""
    if name not in _rendered:
        try:
            _rendered[name] = k8s_check.render(name)
        except k8s_check.ToolMissing as missing:
            pytest.skip(str(missing))
    return copy.deepcopy(_rendered[name])


@pytest.fixture
def objects(overlay: str) -> list[Obj]:
    return rendered_overlay(overlay)


@pytest.fixture(scope="session")
def converted_crds() -> Path:
    """The operators' CRDs converted to JSON Schemas; without the CRDs beside
    the checkout, the tests that need them are skipped with what was not
    checked."""
    try:
        return k8s_check.crd_schema_dir()
    except k8s_check.ToolMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def kubeconform_built(converted_crds: Path) -> Path:
    """kubeconform from the project's setup (go install into .run/tools/bin);
    without go, the kubeconform tests are skipped with what was not checked."""
    try:
        return k8s_check.setup_kubeconform()
    except k8s_check.ToolMissing as missing:
        pytest.skip(str(missing))


def fixture(name: str) -> tuple[list[Obj], str, str]:
    """A broken fixture's objects, the check that must catch it, and what it must say."""
    path = FIXTURES / f"{name}.yaml"
    header = {
        line.split(":", 1)[0][2:].strip(): line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# caught-by:") or line.startswith("# expect:")
    }
    return k8s_check.load(path), header["caught-by"], header["expect"]


BROKEN = sorted(
    path.stem
    for path in FIXTURES.glob("*.yaml")
    if not path.stem.startswith("schema-") and "caught-by:" in path.read_text()
)


# --- rendering and schemas --------------------------------------------------------


def test_overlay_renders_every_part(objects: list[Obj], overlay: str) -> None:
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Namespace", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
        "ConfigMap", "Job", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "CassandraDatacenter",
        "RedisReplication", "RedisSentinel", "ServiceMonitor", "PrometheusRule",
    } <= kinds  # fmt: skip
    deployments = {obj["metadata"]["name"] for obj in k8s_check.of_kind(objects, "Deployment")}
    services = {"identity", "petitions", "signing", "tally-consumer", "tally-reader", "gateway"}
    dev_only = {"devidp", "locust-worker"}
    assert deployments == (services | dev_only if overlay == "dev" else services)


def test_every_object_passes_its_strict_schema(objects: list[Obj], converted_crds: Path) -> None:
    assert k8s_check.validate_schemas(objects) == []


def test_kubeconform_passes_every_object(objects: list[Obj], kubeconform_built: Path) -> None:
    assert k8s_check.kubeconform(objects) == []


@pytest.mark.parametrize("name", ["schema-cassandra-misspelt", "schema-deployment-misspelt"])
def test_schemas_refuse_a_misspelt_field(name: str, kubeconform_built: Path) -> None:
    broken = k8s_check.load(FIXTURES / f"{name}.yaml")
    misspelt = "nodeAffinityLabel" if "cassandra" in name else "replica"
    python = k8s_check.validate_schemas(broken)
    assert python
    assert misspelt in " ".join(python)
    kubeconform = k8s_check.kubeconform(broken)
    assert kubeconform
    assert misspelt in " ".join(kubeconform)


def test_schemas_refuse_a_misspelt_field_without_kubeconform(converted_crds: Path) -> None:
    for name in ("schema-cassandra-misspelt", "schema-deployment-misspelt"):
        assert k8s_check.validate_schemas(k8s_check.load(FIXTURES / f"{name}.yaml")), name


def test_cassandra_config_object_is_valid_despite_its_byte_string_type(converted_crds: Path) -> None:
    """The trap of ../shared/crds/README.md: spec.config is typed string
    (format byte) with preserve-unknown-fields, and real datacenters write an
    object there."""
    valid = k8s_check.load(FIXTURES / "schema-cassandra-config-object.yaml")
    assert isinstance(valid[0]["spec"]["config"], dict)
    assert k8s_check.validate_schemas(valid) == []
    node = {"type": "string", "format": "byte", "x-kubernetes-preserve-unknown-fields": True}
    assert crd_schemas.convert_node(node) == {}


def test_kubeconform_accepts_the_cassandra_config_object(kubeconform_built: Path) -> None:
    assert k8s_check.kubeconform(k8s_check.load(FIXTURES / "schema-cassandra-config-object.yaml")) == []


def test_converted_crd_schemas_are_strict() -> None:
    node = {"type": "object", "properties": {"size": {"type": "integer", "format": "int32"}}}
    assert crd_schemas.convert_node(node) == {
        "type": "object",
        "properties": {"size": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert crd_schemas.convert_node({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}]})["type"] == [
        "integer",
        "string",
    ]


# --- policies on the rendered overlays ------------------------------------------------


@pytest.mark.parametrize(
    "check",
    [
        "env-names",
        "probes",
        "grace",
        "labels",
        "topics",
        "pod-security",
        "secret-files",
        "observability",
        "replication",
        "network",
        "kafka-clients",
        "kafka-acls",
        "redis-clients",
        "cassandra-clients",
    ],
)
def test_policy_holds(objects: list[Obj], overlay: str, check: str) -> None:
    assert k8s_check.checks_for(overlay)[check](objects) == []


@pytest.mark.parametrize("name", BROKEN)
def test_policy_catches_its_broken_fixture(name: str) -> None:
    replacements, check, expected = fixture(name)
    prod = rendered_overlay("prod")
    policy = k8s_check.checks_for("prod")[check]
    assert policy(prod) == [], "the fixture must be the only thing wrong"
    problems = policy(k8s_check.with_replaced(prod, replacements))
    assert any(expected in problem for problem in problems), problems


def test_every_policy_has_a_broken_fixture() -> None:
    caught = {fixture(name)[1] for name in BROKEN}
    assert caught == set(k8s_check.checks_for("prod"))


def test_a_settings_class_that_does_not_import_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    prod = rendered_overlay("prod")
    monkeypatch.setitem(k8s_check.SETTINGS_OF_MODULE, "services.petitions", "services.petitions.gone:Settings")
    problems = k8s_check.check_env_names(prod)
    assert any(
        p.startswith("Deployment/petitions: its settings class services.petitions.gone:Settings does not import")
        for p in problems
    ), problems


def test_petitions_settings_are_checked() -> None:
    """The petitions Deployment's environment is parsed by PetitionsSettings
    itself (the env-name policy reports a settings class that does not
    import rather than skipping its container)."""
    prod = rendered_overlay("prod")
    petitions = [item for item in k8s_check.containers(prod) if item.component == "petitions"]
    settings, problems = k8s_check.settings_for(prod, petitions[0])
    assert problems == []
    assert type(settings).__name__ == "PetitionsSettings"


def test_topics_read_from_the_code_include_the_compacted_state() -> None:
    from servicekit.settings import CommonSettings
    from services import migrations

    names = {topic.name for topic in migrations.topics(CommonSettings())}
    kafka_topics = {t["spec"]["topicName"] for t in k8s_check.of_kind(rendered_overlay("prod"), "KafkaTopic")}
    assert names <= kafka_topics


def test_grace_is_read_from_the_config_map_when_set() -> None:
    """PETITIONS_GRACE_SECONDS from the ConfigMap, not the class default: a
    longer drain configured there needs a longer grace period."""
    prod = rendered_overlay("prod")
    longer = copy.deepcopy(
        next(o for o in prod if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "signing-config")
    )
    longer["data"]["PETITIONS_GRACE_SECONDS"] = "40"
    problems = k8s_check.check_grace(k8s_check.with_replaced(prod, [longer]))
    assert problems == ["Deployment/signing: terminationGracePeriodSeconds 30 <= preStop 5 s + grace_seconds 40 s"]


# --- the stores' clients, against the code ---------------------------------------------

# Each workload's code, and what in it shows that it uses a store.
CODE_OF = {
    "identity": "services/identity",
    "petitions": "services/petitions",
    "signing": "services/signing",
    "tally-consumer": "services/tally",
    "tally-reader": "services/tally",
    "gateway": "services/gateway",
    "migrate": "services/migrations.py",
}
STORE_MARKERS = {
    "kafka": ("kafka_options(", "kafka_producer(", "PetitionView.open("),
    "redis": ("redis_connection(", "redis_client("),
    "cassandra": ("cassandra_session(", "CassandraSession("),
}


def code_of(component: str) -> str:
    path = k8s_check.REPO / CODE_OF[component]
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return "\n".join(file.read_text() for file in files)


def test_the_store_table_is_what_the_code_uses() -> None:
    """STORES_OF decides which workloads the client checks (and the network
    flows) hold for: a workload that starts using a store in its code must
    be listed, or its manifests would go unchecked."""
    for component in CODE_OF:
        code = code_of(component)
        used = {store for store, markers in STORE_MARKERS.items() if any(marker in code for marker in markers)}
        assert used == set(k8s_check.STORES_OF.get(component, ())), component


def test_the_kafka_uses_name_every_topic_the_code_names() -> None:
    """KAFKA_TOPIC_USES, which the KafkaUsers' ACLs are held to, names every
    topic each client's code names (by its settings property; the petition
    view reads petition-state), so a new use is not left without its ACL."""
    uses: dict[str, set[str]] = {}
    for component, topics in k8s_check.KAFKA_TOPIC_USES.items():
        uses.setdefault(CODE_OF[component], set()).update(topics)
    for package, listed in uses.items():
        component = next(name for name, path in CODE_OF.items() if path == package)
        code = code_of(component)
        named = {
            prop
            for prop in ("signatures_topic", "petition_events_topic", "petition_state_topic", "dead_letter_topic")
            if f".{prop}" in code
        }
        if "PetitionView.open(" in code:
            named.add("petition_state_topic")
        assert named == listed, package


def test_identity_and_the_gateway_have_no_kafka_user(objects: list[Obj]) -> None:
    users = {user["metadata"]["name"] for user in k8s_check.of_kind(objects, "KafkaUser")}
    assert users == {"migrate", "petitions", "signing", "tally-consumer", "tally-reader"}
    for item in k8s_check.containers(objects):
        if item.component in ("identity", "gateway"):
            secrets = {volume.get("secret", {}).get("secretName") for volume in item.pod["spec"].get("volumes", [])}
            assert not secrets & users, item.name


def test_the_acls_follow_the_topic_prefix() -> None:
    """The topics a client needs are named by its settings, prefix included:
    with PETITIONS_TOPIC_PREFIX set, the ACLs on the bare names no longer
    cover them."""
    prod = rendered_overlay("prod")
    kafka = copy.deepcopy(
        next(o for o in prod if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "petitions-kafka")
    )
    kafka["data"]["PETITIONS_TOPIC_PREFIX"] = "blue-"
    problems = k8s_check.check_kafka_acls(k8s_check.with_replaced(prod, [kafka]))
    assert "KafkaUser signing: no Write on topic blue-signatures, which Deployment/signing uses" in problems
    assert "KafkaUser tally-consumer: no Read on group tally, which Deployment/tally-consumer uses" not in problems


def test_the_migration_replicates_the_keyspace_in_the_datacenter(objects: list[Obj]) -> None:
    """`petitions migrate`, with the Job's own settings, creates the keyspace
    with NetworkTopologyStrategy in the CassandraDatacenter's data centre at
    the Job's replication (3 in prod: check_replication), so LOCAL_QUORUM
    finds its replicas in the data centre the driver sends the queries to."""
    from services import migrations

    (job,) = [item for item in k8s_check.containers(objects) if k8s_check.program_of(item.container) == "migrate"]
    settings, problems = k8s_check.settings_for(objects, job)
    assert settings is not None, problems
    (datacenter,) = k8s_check.of_kind(objects, "CassandraDatacenter")
    name = k8s_check.datacenter_name(datacenter)
    keyspace = next(s for s in migrations.cassandra_statements(settings) if "KEYSPACE" in s.upper())
    assert "'class': 'NetworkTopologyStrategy'" in keyspace
    assert re.search(rf"'{name}'\s*:\s*'?{settings.cassandra_replication}'?", keyspace), keyspace


# --- versions ---------------------------------------------------------------------


def test_cassandra_is_the_local_stacks_version() -> None:
    (datacenter,) = k8s_check.of_kind(rendered_overlay("prod"), "CassandraDatacenter")
    assert datacenter["spec"]["serverVersion"] == versions.CASSANDRA


def test_kafka_is_one_the_pinned_strimzi_runs() -> None:
    (kafka,) = k8s_check.of_kind(rendered_overlay("prod"), "Kafka")
    # Strimzi 1.2.0 runs Kafka 4.x only, by default 4.3.1 (metadata 4.3-IV0).
    assert kafka["spec"]["kafka"]["version"] == "4.3.1"
    assert kafka["spec"]["kafka"]["metadataVersion"] == "4.3-IV0"


def test_kafka_is_the_local_stacks_version() -> None:
    (kafka,) = k8s_check.of_kind(rendered_overlay("prod"), "Kafka")
    assert kafka["spec"]["kafka"]["version"] == versions.KAFKA


# --- the generated observability manifests ----------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    for path, obj in (
        (k8s_check.PROMETHEUS_RULE_OUT, k8s_check.prometheus_rule()),
        (k8s_check.DASHBOARD_OUT, k8s_check.dashboard_config_map()),
    ):
        assert yaml.safe_load(path.read_text()) == obj, f"{path} is stale: run tools/k8s_check.py generate"


# --- the image ----------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(k8s_check.REPO / ".venv" / "bin" / "hadolint")
    command = [str(binary) if binary.exists() else "hadolint", "--no-color", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_containerfile_passes_hadolint() -> None:
    result = hadolint(k8s_check.REPO / "Containerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_a_broken_containerfile() -> None:
    result = hadolint(FIXTURES / "Containerfile.broken")
    assert result.returncode != 0
    assert "DL3007" in result.stdout
    assert "DL3002" in result.stdout


# --- kustomize and the load generator ---------------------------------------------------


def test_kustomizations_have_no_remote_bases() -> None:
    """Everything renders offline: each resource and patch is a file or folder of deploy/k8s/."""
    for kustomization in sorted(k8s_check.K8S.rglob("kustomization.yaml")):
        spec = yaml.safe_load(kustomization.read_text())
        paths = [*spec.get("resources", []), *(p["path"] for p in spec.get("patches", []) if "path" in p)]
        for path in paths:
            assert "://" not in path, f"{kustomization}: remote {path}"
            target = (kustomization.parent / path).resolve()
            assert target.exists(), f"{kustomization}: {path} does not exist"
            assert target.is_relative_to(k8s_check.K8S), f"{kustomization}: {path} is outside deploy/k8s/"


def test_locust_master_waits_for_every_worker() -> None:
    dev = rendered_overlay("dev")
    (master,) = [job for job in k8s_check.of_kind(dev, "Job") if job["metadata"]["name"] == "locust-master"]
    (worker,) = [d for d in k8s_check.of_kind(dev, "Deployment") if d["metadata"]["name"] == "locust-worker"]
    command = master["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--headless" in command
    assert int(command[command.index("--expect-workers") + 1]) == worker["spec"]["replicas"]
    assert "loadtests/locustfile.py" in command
    assert not [obj for obj in rendered_overlay("prod") if obj["metadata"]["name"].startswith("locust")]
