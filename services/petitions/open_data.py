"""Public open data about petitions themselves (the tally's export,
services/tally/open_data.py, has their counts): what each published petition
asks, its state, type and legislature, its committee and rapporteur, the
moderators' rejection and what parliament did with it (outcomes).

The shape follows the UK Parliament's petition JSON (a JSON:API resource:
`{"data": {"id", "type": "petition", "attributes": {...}}}`, a list of them
under "data" for a collection) so a reader of the UK's open data recognises
it; attribute names are this project's where its model differs (several
outcomes of each kind, committee history, territory thresholds).

Only what the public may already see is published: a draft or a petition
waiting for moderation is refused (the CLI reads through the Petitions
service without a credential, which never returns them anyway); the author's
and staff's pseudonyms never appear (the author's published name does, as
the UK's creator_name). Timestamps are RFC 3339 in UTC, null when unset;
petitions are sorted by id so two exports of the same petitions are
byte-identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from petitions.v1 import identity_pb2, petition_pb2

RESOURCE_TYPE = "petition"

# Never published (lifecycle.is_public says the same of the service's reads).
UNPUBLISHED = frozenset({petition_pb2.PETITION_STATE_DRAFT, petition_pb2.PETITION_STATE_SUBMITTED})

_METHODS = {identity_pb2.VERIFICATION_METHOD_OIDC: "oidc", identity_pb2.VERIFICATION_METHOD_EMAIL: "email"}
_OUTCOME_KINDS = {petition_pb2.Outcome.KIND_RESPONSE: "response", petition_pb2.Outcome.KIND_DEBATE: "debate"}


class NotPublished(ValueError):
    """The petition is not public (a draft, or waiting for moderation)."""


def state_name(state: petition_pb2.PetitionState.ValueType) -> str:
    """ "open" for PETITION_STATE_OPEN: the lower-case names the audit trail
    and the service's tables use."""
    return petition_pb2.PetitionState.Name(state).removeprefix("PETITION_STATE_").lower()


def _instant(message: Any, field: str) -> str | None:
    """A Timestamp field of a message, or None when it is unset."""
    if not message.HasField(field):
        return None
    stamp: Timestamp = getattr(message, field)
    return str(stamp.ToJsonString())


def _outcome(outcome: petition_pb2.Outcome) -> dict[str, Any]:
    return {
        "kind": _OUTCOME_KINDS.get(outcome.kind, "unspecified"),
        "date": _instant(outcome, "date"),
        "text": outcome.text,
        "links": list(outcome.links),
        "recorded_at": _instant(outcome, "recorded_at"),
    }


def _committee(committee_id: str, committees: Mapping[str, str]) -> dict[str, str] | None:
    if not committee_id:
        return None
    return {"id": committee_id, "name": committees.get(committee_id, "")}


def as_resource(
    petition: petition_pb2.Petition,
    *,
    committees: Mapping[str, str] | None = None,
    rejection_reasons: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One petition as a JSON:API resource object. `committees` and
    `rejection_reasons` map ids and codes to their published names (the
    registries, from ListCommittees and ListPetitionTypes); an id missing
    from them is published with an empty name."""
    if petition.state in UNPUBLISHED:
        raise NotPublished(f"petition {petition.id!r} is {state_name(petition.state)}, not published")
    names = committees or {}
    reasons = rejection_reasons or {}
    rejection = None
    if petition.state == petition_pb2.PETITION_STATE_REJECTED or petition.HasField("rejection"):
        rejection = {
            "code": petition.rejection.reason_code,
            "label": reasons.get(petition.rejection.reason_code, ""),
            "details": petition.rejection.explanation,
            "duplicate_of": petition.rejection.duplicate_of or None,
        }
    eligibility = petition.eligibility
    attributes: dict[str, Any] = {
        # What the petition asks (the UK's "action" and "background").
        "title": petition.title,
        "text": petition.text,
        "creator_name": petition.author_name,
        "petition_type": petition.type,
        "legislature": petition.legislature,
        "state": state_name(petition.state),
        "created_at": _instant(petition, "created_at"),
        "updated_at": _instant(petition, "updated_at"),
        "submitted_at": _instant(petition, "submitted_at"),
        # The moderators' decision (opened or rejected).
        "decided_at": _instant(petition, "decided_at"),
        "opens_at": _instant(petition, "opens_at"),
        "closes_at": _instant(petition, "closes_at"),
        "closed_reason": petition.closed_reason,
        "sponsor_count": petition.sponsors,
        "sponsors_required": petition.sponsors_required,
        "thresholds": [
            {
                "id": t.id,
                "label": t.label,
                "signatures": t.signatures,
                "min_territories": t.min_territories,
            }
            for t in petition.thresholds
        ],
        "eligibility": {
            "countries": list(eligibility.countries),
            "adults_only": eligibility.adults_only,
            "methods": [_METHODS.get(m, "unspecified") for m in eligibility.methods],
            "accept_declared_adults": eligibility.accept_declared_adults,
        },
        "rejection": rejection,
        "committee": _committee(petition.committee, names),
        "rapporteur": petition.rapporteur,
        # Oldest first; the last is current. Who decided (a staff
        # pseudonym) is the audit trail's, not open data.
        "committee_history": [
            {
                "committee": _committee(a.committee, names),
                "rapporteur": a.rapporteur,
                "note": a.note,
                "assigned_at": _instant(a, "assigned_at"),
            }
            for a in petition.assignments
        ],
        "outcomes": [_outcome(o) for o in petition.outcomes],
    }
    return {"id": petition.id, "type": RESOURCE_TYPE, "attributes": attributes}


def document(
    petition: petition_pb2.Petition,
    *,
    committees: Mapping[str, str] | None = None,
    rejection_reasons: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One petition's document, as the UK's /petitions/ID.json."""
    return {"data": as_resource(petition, committees=committees, rejection_reasons=rejection_reasons)}


def to_json(
    petitions: Iterable[petition_pb2.Petition],
    *,
    committees: Mapping[str, str] | None = None,
    rejection_reasons: Mapping[str, str] | None = None,
) -> str:
    """The collection document (the UK's /petitions.json): every petition,
    sorted by id."""
    resources = [
        as_resource(p, committees=committees, rejection_reasons=rejection_reasons)
        for p in sorted(petitions, key=lambda p: p.id)
    ]
    return json.dumps({"data": resources}, indent=2, ensure_ascii=False) + "\n"
