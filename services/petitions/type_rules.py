"""A petition type's rules as the contract's messages: what ListPetitionTypes
shows and what a new draft copies (thresholds, eligibility), written once."""

from __future__ import annotations

from petitions.v1 import identity_pb2, petition_pb2, petitions_pb2
from services.petitions import types

_METHODS = {"oidc": identity_pb2.VERIFICATION_METHOD_OIDC, "email": identity_pb2.VERIFICATION_METHOD_EMAIL}


def thresholds_message(petition_type: types.PetitionType) -> list[petition_pb2.Threshold]:
    return [
        petition_pb2.Threshold(id=t.id, label=t.label, signatures=t.signatures, min_territories=t.min_territories)
        for t in petition_type.thresholds
    ]


def eligibility_message(rule: types.EligibilityRule) -> petition_pb2.Eligibility:
    return petition_pb2.Eligibility(
        countries=sorted(rule.countries),
        adults_only=rule.adults_only,
        methods=[_METHODS[m] for m in sorted(rule.methods)],
        accept_declared_adults=rule.accept_declared_adults,
    )


def type_message(petition_type: types.PetitionType) -> petitions_pb2.PetitionType:
    return petitions_pb2.PetitionType(
        id=petition_type.id,
        name=petition_type.name,
        thresholds=thresholds_message(petition_type),
        sponsors_required=petition_type.sponsors_required,
        duration_days=petition_type.duration_days,
        eligibility=eligibility_message(petition_type.eligibility),
    )
