"""Petition types and rejection reasons: configuration, not code.

A petition's thresholds, duration, sponsor rule and eligibility come from its
type (issue 14, part 4): the Assemblée nationale's and the UK Parliament's
are packaged in data/types.json, the moderators' rejection reasons in
data/rejection_reasons.json (data/README.md says where each rule comes
from). A deployment may point the service at files of its own. The current
legislature is not configuration: the service keeps it in Cassandra, as its
end is an act of staff.

Plain types and a strict loader: a bad file is refused at start with a
ValueError naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from services.petitions.config_files import DATA, Fields, read_json, unique

TYPES_FILE = DATA / "types.json"
REJECTION_REASONS_FILE = DATA / "rejection_reasons.json"

# The verification methods a type may allow, as credentials name them.
METHODS = frozenset({"oidc", "email"})
_METHOD = re.compile("|".join(sorted(METHODS)))
_COUNTRY = re.compile(r"[A-Z]{2}")
_DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ThresholdRule:
    id: str
    label: str
    signatures: int
    # Above zero: reached only with signatures from at least this many
    # distinct reference territories as well.
    min_territories: int = 0


@dataclass(frozen=True)
class EligibilityRule:
    # ISO 3166-1 alpha-2; empty = anyone.
    countries: frozenset[str]
    adults_only: bool
    # "oidc", "email"; empty = any. One person who proves by email and again
    # by OIDC holds two pseudonyms: a type that allows only one method closes
    # that hole.
    methods: frozenset[str]
    # An email signer's own declaration of adulthood satisfies adults_only.
    accept_declared_adults: bool


@dataclass(frozen=True)
class PetitionType:
    id: str
    name: str
    thresholds: tuple[ThresholdRule, ...]
    # Sponsors (signers with a verified credential, counted once each) the
    # petition needs before it goes to moderation; 0 = none.
    sponsors_required: int
    # Days open from the moment it opens; 0 = until the end of the legislature.
    duration_days: int
    eligibility: EligibilityRule
    # A duration in seconds that replaces duration_days when above zero: a
    # test system's "6 months" that ends within a test (optional in the
    # file, never in the packaged types).
    duration_seconds: int = 0

    @property
    def needs_sponsors(self) -> bool:
        return self.sponsors_required > 0

    def closes_at(self, opened_at: float) -> float | None:
        """When a petition of this type opened at opened_at (seconds since the
        epoch) stops taking signatures; None = at the end of its legislature."""
        if self.duration_seconds > 0:
            return opened_at + self.duration_seconds
        if self.duration_days == 0:
            return None
        return opened_at + self.duration_days * _DAY_SECONDS


@dataclass(frozen=True)
class RejectionReason:
    code: str
    label: str
    # The petition's text is withheld from the public once rejected for this
    # reason (the UK hides libellous and offensive petitions): publishing
    # defamatory or offensive text with the rejection would do the harm the
    # rejection prevents.
    hides_petition: bool = False
    # A rejection for this reason must name the petition it duplicates.
    needs_duplicate_of: bool = False


class UnknownType(LookupError):
    def __init__(self, type_id: str, known: Mapping[str, PetitionType]):
        super().__init__(f"there is no petition type {type_id!r}; the types are {', '.join(sorted(known))}")
        self.type_id = type_id


class UnknownReason(LookupError):
    def __init__(self, code: str, known: Mapping[str, RejectionReason]):
        super().__init__(f"there is no rejection reason {code!r}; the reasons are {', '.join(known)}")
        self.code = code


@dataclass(frozen=True)
class Catalogue:
    types: Mapping[str, PetitionType]
    default_type: str
    rejection_reasons: Mapping[str, RejectionReason]

    def type_for(self, type_id: str) -> PetitionType:
        """The type named type_id; the default type for ""; UnknownType otherwise."""
        found = self.types.get(type_id or self.default_type)
        if found is None:
            raise UnknownType(type_id, self.types)
        return found

    def reason(self, code: str) -> RejectionReason:
        found = self.rejection_reasons.get(code)
        if found is None:
            raise UnknownReason(code, self.rejection_reasons)
        return found


def load_catalogue(path: Path | None = None, *, reasons: Path | None = None) -> Catalogue:
    """Types and rejection reasons. path: None = the packaged data/types.json
    and data/rejection_reasons.json; a directory = its types.json and
    rejection_reasons.json; a file = the types file. reasons: the rejection
    reasons file, when not the directory's (default: the packaged one)."""
    if path is None:
        types_file, reasons_file = TYPES_FILE, REJECTION_REASONS_FILE
    elif path.is_dir():
        types_file, reasons_file = path / "types.json", path / "rejection_reasons.json"
    else:
        types_file, reasons_file = path, REJECTION_REASONS_FILE
    if reasons is not None:
        reasons_file = reasons
    types, default_type = _load_types(types_file)
    return Catalogue(types=types, default_type=default_type, rejection_reasons=load_rejection_reasons(reasons_file))


def _load_types(path: Path) -> tuple[Mapping[str, PetitionType], str]:
    document = Fields(path, "", read_json(path))
    entries = [_petition_type(entry) for entry in document.objects("types")]
    unique(path, document.field_name("types"), [t.id for t in entries], "type id")
    types = MappingProxyType({t.id: t for t in entries})
    default_type = document.identifier("default_type")
    if default_type not in types:
        document.fail("default_type", f"names no type of the file: {default_type!r}")
    document.done()
    return types, default_type


def _petition_type(entry: Fields) -> PetitionType:
    thresholds = tuple(_threshold(t) for t in entry.objects("thresholds"))
    unique(entry.path, entry.field_name("thresholds"), [t.id for t in thresholds], "threshold id")
    eligibility = Fields(entry.path, entry.field_name("eligibility"), entry.mapping("eligibility"))
    rule = EligibilityRule(
        countries=eligibility.strings("countries", _COUNTRY, "an ISO 3166-1 alpha-2 code in capitals"),
        adults_only=eligibility.boolean("adults_only"),
        methods=eligibility.strings("methods", _METHOD, f"one of {', '.join(sorted(METHODS))}"),
        accept_declared_adults=eligibility.boolean("accept_declared_adults", default=False),
    )
    eligibility.done()
    petition_type = PetitionType(
        id=entry.identifier("id"),
        name=entry.string("name"),
        thresholds=thresholds,
        sponsors_required=entry.integer("sponsors_required", minimum=0),
        duration_days=entry.integer("duration_days", minimum=0),
        eligibility=rule,
        duration_seconds=entry.integer("duration_seconds", minimum=0, default=0),
    )
    entry.done()
    return petition_type


def _threshold(entry: Fields) -> ThresholdRule:
    threshold = ThresholdRule(
        id=entry.identifier("id"),
        label=entry.string("label"),
        signatures=entry.integer("signatures", minimum=1),
        min_territories=entry.integer("min_territories", minimum=0, default=0),
    )
    entry.done()
    return threshold


def load_rejection_reasons(path: Path | None = None) -> Mapping[str, RejectionReason]:
    """The rejection reasons, in the file's order (the order moderators see)."""
    path = path or REJECTION_REASONS_FILE
    document = Fields(path, "", read_json(path))
    reasons: list[RejectionReason] = []
    for entry in document.objects("reasons"):
        reasons.append(
            RejectionReason(
                code=entry.identifier("code"),
                label=entry.string("label"),
                hides_petition=entry.boolean("hides_petition", default=False),
                needs_duplicate_of=entry.boolean("needs_duplicate_of", default=False),
            )
        )
        entry.done()
    unique(path, document.field_name("reasons"), [r.code for r in reasons], "reason code")
    document.done()
    return MappingProxyType({r.code: r for r in reasons})
