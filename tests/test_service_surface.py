"""What every service exposes to operators: health, reflection, metrics."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from petitions.v1 import identity_pb2, signing_pb2, tally_pb2
from tests.system import SystemClient

pytestmark = pytest.mark.stack

SERVICE_NAMES = {
    "identity": "petitions.v1.Identity",
    "signing": "petitions.v1.Signing",
    "tally": "petitions.v1.Tally",
}


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_health_and_reflection(system: SystemClient, service: str) -> None:
    channel = system.channels[service]
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service]), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answers = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE_NAMES[service], "grpc.health.v1.Health"} <= listed


def _call_each_service(system: SystemClient) -> None:
    system.identity.GetVerificationKeys(identity_pb2.GetVerificationKeysRequest(), timeout=5)
    # Signing serves no reads any more (petitions are the petitions
    # service's): a Sign without a credential is refused, and counted.
    with pytest.raises(grpc.RpcError):
        system.signing.Sign(signing_pb2.SignRequest(petition_id="not-there"), timeout=10)
    with pytest.raises(grpc.RpcError):
        system.tally.GetTally(tally_pb2.GetTallyRequest(petition_id="not-there"), timeout=5)


EXPECTED_CALLS = {
    "identity": ("GetVerificationKeys", "OK"),
    "signing": ("Sign", "INVALID_ARGUMENT"),
    "tally": ("GetTally", "NOT_FOUND"),
}


@pytest.mark.parametrize("service", sorted(SERVICE_NAMES))
def test_prometheus_metrics_count_rpcs_by_method_and_code(system: SystemClient, service: str) -> None:
    _call_each_service(system)
    port = system.namespace.ports[f"{service}-metrics"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        exposition = response.read().decode()
    method, code = EXPECTED_CALLS[service]
    assert f'petitions_rpc_requests_total{{code="{code}",method="{method}"}}' in exposition
    assert f'petitions_rpc_latency_seconds_count{{method="{method}"}}' in exposition
