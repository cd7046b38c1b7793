"""Petition types and rejection reasons (services/petitions/types.py): the
packaged Assemblée nationale and UK Parliament types say what issue 14 says,
and a bad configuration file is refused naming the file and the field."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.petitions.types import (
    REJECTION_REASONS_FILE,
    TYPES_FILE,
    EligibilityRule,
    PetitionType,
    RejectionReason,
    ThresholdRule,
    UnknownReason,
    UnknownType,
    load_catalogue,
    load_rejection_reasons,
)

DAY = 86_400.0


def test_the_assemblee_type() -> None:
    catalogue = load_catalogue()
    assert catalogue.default_type == "assemblee"
    assert catalogue.types["assemblee"] == PetitionType(
        id="assemblee",
        name="Assemblée nationale",
        thresholds=(
            ThresholdRule("committee", "Examined by the committee", 100_000),
            ThresholdRule("plenary", "May be debated in plenary", 500_000, min_territories=30),
        ),
        sponsors_required=0,
        duration_days=0,
        eligibility=EligibilityRule(
            countries=frozenset(), adults_only=True, methods=frozenset({"oidc"}), accept_declared_adults=False
        ),
    )


def test_the_uk_type() -> None:
    assert load_catalogue().types["uk"] == PetitionType(
        id="uk",
        name="UK Parliament",
        thresholds=(
            ThresholdRule("response", "Government responds", 10_000),
            ThresholdRule("debate", "Considered for debate", 100_000),
        ),
        sponsors_required=5,
        duration_days=182,
        eligibility=EligibilityRule(
            countries=frozenset(), adults_only=False, methods=frozenset(), accept_declared_adults=False
        ),
    )


def test_only_the_two_reference_types_are_packaged() -> None:
    assert list(load_catalogue().types) == ["assemblee", "uk"]


def test_duration_and_sponsors_come_from_the_type() -> None:
    catalogue = load_catalogue()
    uk, assemblee = catalogue.types["uk"], catalogue.types["assemblee"]
    opened = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert uk.closes_at(opened) == opened + 182 * DAY
    # Open until the end of the legislature: no deadline of its own.
    assert assemblee.closes_at(opened) is None
    assert uk.needs_sponsors
    assert not assemblee.needs_sponsors


def test_type_for_defaults_and_refuses_an_unknown_type() -> None:
    catalogue = load_catalogue()
    assert catalogue.type_for("") is catalogue.types["assemblee"]
    assert catalogue.type_for("uk") is catalogue.types["uk"]
    with pytest.raises(UnknownType, match=r"^there is no petition type 'senat'; the types are assemblee, uk$"):
        catalogue.type_for("senat")


# The UK Parliament's published standards, one code per reason a moderator gives.
UK_STANDARDS = {
    "duplicate",
    "already-happening",
    "not-parliament-responsibility",
    "devolved",
    "no-action",
    "unclear",
    "libellous",
    "offensive",
    "confidential",
    "commercial",
    "sub-judice",
    "named-individual",
    "honours-appointments",
    "party-political",
    "nonsense",
    "advert",
    "foi-request",
    "fake-name",
}


def test_the_rejection_reasons() -> None:
    reasons = load_catalogue().rejection_reasons
    assert set(reasons) == UK_STANDARDS
    for code, reason in reasons.items():
        assert reason.code == code
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code), code
        assert reason.label, code
        assert reason.label.strip() == reason.label, code
    # A duplicate names the petition it duplicates; only a duplicate does.
    assert {code for code, r in reasons.items() if r.needs_duplicate_of} == {"duplicate"}
    # Text that would harm if published stays hidden once rejected.
    hidden = {code for code, r in reasons.items() if r.hides_petition}
    assert {"libellous", "offensive", "confidential", "sub-judice", "named-individual"} <= hidden
    assert not hidden & {"duplicate", "no-action", "already-happening", "not-parliament-responsibility"}


def test_reason_lookup() -> None:
    catalogue = load_catalogue()
    assert catalogue.reason("duplicate") == RejectionReason(
        "duplicate", "There is already a petition about the same thing", needs_duplicate_of=True
    )
    with pytest.raises(UnknownReason, match=r"^there is no rejection reason 'boring'; the reasons are duplicate, "):
        catalogue.reason("boring")


def test_the_catalogue_cannot_be_changed_in_place() -> None:
    catalogue = load_catalogue()
    with pytest.raises(TypeError):
        catalogue.types["x"] = catalogue.types["uk"]  # type: ignore[index]
    with pytest.raises(TypeError):
        catalogue.rejection_reasons["x"] = catalogue.rejection_reasons["duplicate"]  # type: ignore[index]


# A small valid types file, changed by each case below into a bad one.
VALID: dict[str, Any] = {
    "default_type": "t1",
    "types": [
        {
            "id": "t1",
            "name": "Test type",
            "thresholds": [{"id": "first", "label": "First", "signatures": 3, "min_territories": 2}],
            "sponsors_required": 2,
            "duration_days": 7,
            "eligibility": {"countries": ["FR"], "adults_only": True, "methods": ["oidc", "email"]},
        }
    ],
}


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_file_of_its_own(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path / "types.json", VALID))
    assert catalogue.types["t1"] == PetitionType(
        id="t1",
        name="Test type",
        thresholds=(ThresholdRule("first", "First", 3, 2),),
        sponsors_required=2,
        duration_days=7,
        eligibility=EligibilityRule(frozenset({"FR"}), True, frozenset({"oidc", "email"}), False),
    )
    # The reasons stay the packaged ones unless named.
    assert set(catalogue.rejection_reasons) == UK_STANDARDS


def test_a_duration_in_seconds_replaces_the_days(tmp_path: Path) -> None:
    document = copy.deepcopy(VALID)
    document["types"][0]["duration_seconds"] = 30
    petition_type = load_catalogue(write(tmp_path / "types.json", document)).types["t1"]
    assert petition_type.closes_at(1000.0) == 1030.0
    document["types"][0]["duration_seconds"] = -1
    with pytest.raises(ValueError, match="duration_seconds"):
        load_catalogue(write(tmp_path / "types.json", document))


def test_a_directory_of_its_own(tmp_path: Path) -> None:
    write(tmp_path / "types.json", VALID)
    write(tmp_path / "rejection_reasons.json", {"reasons": [{"code": "spam", "label": "Spam"}]})
    catalogue = load_catalogue(tmp_path)
    assert list(catalogue.types) == ["t1"]
    assert dict(catalogue.rejection_reasons) == {"spam": RejectionReason("spam", "Spam")}


def test_the_packaged_files_are_where_the_defaults_say() -> None:
    assert load_catalogue(TYPES_FILE.parent) == load_catalogue()
    assert load_rejection_reasons(REJECTION_REASONS_FILE) == load_catalogue().rejection_reasons


Change = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Change:
    """A change setting the field at a dotted path (list indices as numbers)."""

    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


_DELETE = object()


def _second_type(document: dict[str, Any]) -> None:
    document["types"].append(copy.deepcopy(document["types"][0]))


def _second_threshold(document: dict[str, Any]) -> None:
    thresholds = document["types"][0]["thresholds"]
    thresholds.append(dict(thresholds[0], signatures=10))


BAD_TYPES: list[tuple[str, Change, str]] = [
    ("id-upper-case", _set("types.0.id", "T1"), "types[0].id: must be 1 to 32 characters"),
    ("id-newline", _set("types.0.id", "t1\n"), "types[0].id: must be 1 to 32 characters"),
    ("id-too-long", _set("types.0.id", "t" * 33), "types[0].id: must be 1 to 32 characters"),
    ("id-leading-dash", _set("types.0.id", "-t1"), "types[0].id: must be 1 to 32 characters"),
    ("id-missing", _set("types.0.id", _DELETE), "types[0].id: is missing"),
    ("name-empty", _set("types.0.name", " "), "types[0].name: must be a non-empty string"),
    ("signatures-zero", _set("types.0.thresholds.0.signatures", 0), "types[0].thresholds[0].signatures: must be"),
    ("signatures-text", _set("types.0.thresholds.0.signatures", "3"), "types[0].thresholds[0].signatures: must be"),
    ("signatures-float", _set("types.0.thresholds.0.signatures", 3.5), "types[0].thresholds[0].signatures: must"),
    ("signatures-bool", _set("types.0.thresholds.0.signatures", True), "types[0].thresholds[0].signatures: must"),
    (
        "territories-negative",
        _set("types.0.thresholds.0.min_territories", -1),
        "types[0].thresholds[0].min_territories: must be",
    ),
    ("threshold-id", _set("types.0.thresholds.0.id", "First"), "types[0].thresholds[0].id: must be"),
    ("threshold-twice", _second_threshold, "types[0].thresholds: the threshold id 'first' appears twice"),
    ("no-thresholds", _set("types.0.thresholds", []), "types[0].thresholds: must be a non-empty list"),
    ("sponsors-negative", _set("types.0.sponsors_required", -1), "types[0].sponsors_required: must be an integer"),
    ("duration-negative", _set("types.0.duration_days", -7), "types[0].duration_days: must be an integer of at"),
    ("duration-missing", _set("types.0.duration_days", _DELETE), "types[0].duration_days: is missing"),
    ("adults-as-number", _set("types.0.eligibility.adults_only", 1), "types[0].eligibility.adults_only: must be"),
    ("method-unknown", _set("types.0.eligibility.methods", ["sms"]), "types[0].eligibility.methods[0]: must be one"),
    (
        "method-twice",
        _set("types.0.eligibility.methods", ["oidc", "oidc"]),
        "types[0].eligibility.methods: lists a value twice",
    ),
    ("country-lower", _set("types.0.eligibility.countries", ["fr"]), "types[0].eligibility.countries[0]: must be"),
    ("country-three", _set("types.0.eligibility.countries", ["FRA"]), "types[0].eligibility.countries[0]: must be"),
    (
        "eligibility-typo",
        _set("types.0.eligibility.adult_only", True),
        "types[0].eligibility.adult_only: is not a known field",
    ),
    ("field-typo", _set("types.0.duration", 7), "types[0].duration: is not a known field"),
    ("type-twice", _second_type, "types: the type id 't1' appears twice"),
    ("default-unknown", _set("default_type", "t2"), "default_type: names no type of the file: 't2'"),
    ("no-types", _set("types", []), "types: must be a non-empty list"),
    ("type-not-object", _set("types.0", "t1"), "types[0]: must be an object, got a string"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in BAD_TYPES], ids=[c[0] for c in BAD_TYPES])
def test_a_bad_types_file_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, change: Change, message: str
) -> None:
    document = copy.deepcopy(VALID)
    change(document)
    path = write(tmp_path / "types.json", document)
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: {message}')}"):
        load_catalogue(path)


def test_the_valid_file_of_the_bad_cases_loads(tmp_path: Path) -> None:
    # So each refusal above is due to its one change.
    load_catalogue(write(tmp_path / "types.json", VALID))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"default_type": "t1", "default_type": "t1", "types": []}', "the key 'default_type' appears twice"),
        ('{"default_type": "t1", "types": [', "is not JSON: Expecting value at line 1 column 34"),
        ('{"default_type": "t1", "types": [{"id": NaN}]}', "is not JSON: NaN is not a JSON value"),
        ("[]", "the document: must be an object, got a list"),
    ],
)
def test_a_file_that_is_not_a_clean_json_object_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "types.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: {message}')}"):
        load_catalogue(path)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.json"
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: cannot be read: No such file"):
        load_catalogue(path)


@pytest.mark.parametrize(
    ("reasons", "message"),
    [
        ([{"code": "Spam", "label": "Spam"}], "reasons[0].code: must be 1 to 32 characters"),
        ([{"code": "spam", "label": ""}], "reasons[0].label: must be a non-empty string"),
        (
            [{"code": "spam", "label": "Spam"}, {"code": "spam", "label": "Again"}],
            "reasons: the reason code 'spam' appears twice",
        ),
        ([{"code": "spam", "label": "Spam", "hides_petition": "yes"}], "reasons[0].hides_petition: must be true or"),
        ([{"code": "spam", "label": "Spam", "hidden": True}], "reasons[0].hidden: is not a known field"),
        ([], "reasons: must be a non-empty list"),
    ],
)
def test_a_bad_reasons_file_is_refused(tmp_path: Path, reasons: list[object], message: str) -> None:
    path = write(tmp_path / "reasons.json", {"reasons": reasons})
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: {message}')}"):
        load_catalogue(reasons=path)
