"""Creating the petitions a load test or benchmark signs, as an
administrator would: a staff credential from identity (for an identified dev
provider's token: load tests run against dev and test systems), then
Petitions.CreatePetition."""

from __future__ import annotations

import json
import urllib.request
import uuid

import grpc

from loadtests.scenarios import LoadTestSettings
from petitions.v1 import identity_pb2, identity_pb2_grpc, petitions_pb2, petitions_pb2_grpc


def staff_credential(target: LoadTestSettings) -> str:
    body = json.dumps(
        {
            "persona": target.loadtest_staff_persona,
            "audience": target.devidp_audience,
            "identified": True,
            "birthdate": "1980-01-01",
        }
    ).encode()
    request = urllib.request.Request(
        f"{target.devidp_identified_url}/dev/id-token", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        id_token = str(json.load(response)["id_token"])
    with grpc.insecure_channel(target.identity_address) as channel:
        staff: identity_pb2.StaffCredential = identity_pb2_grpc.IdentityStub(channel).ExchangeStaffIdToken(
            identity_pb2.ExchangeStaffIdTokenRequest(id_token=id_token), timeout=10
        )
    return staff.token


def create_petition(target: LoadTestSettings | None = None, prefix: str = "bench") -> str:
    """Creates and opens a petition with a fresh id; returns the id."""
    target = target or LoadTestSettings()
    petition = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(target.petitions_address) as channel:
        petitions_pb2_grpc.PetitionsStub(channel).CreatePetition(
            petitions_pb2.CreatePetitionRequest(id=petition, title="Benchmark", open=True),
            metadata=(("authorization", f"Bearer {staff_credential(target)}"),),
            timeout=30,
        )
    return petition
