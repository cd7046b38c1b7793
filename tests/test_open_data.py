"""Open data: a petition's counts by territory and country, published as JSON
and CSV by `petitions open-data`, equal to the live tally."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest

from petitions.v1 import tally_pb2
from servicekit import open_data
from tests.harness import run_cli
from tests.system import SystemClient


@pytest.fixture(scope="module")
def counted(system: SystemClient) -> str:
    petition = system.create_petition("Published as open data")
    for country, territory in (("FR", "13"), ("FR", "13"), ("FR", "971"), ("BE", "")):
        person = system.credential(f"od-{uuid.uuid4().hex[:8]}", country, territory)
        system.sign(person.token, petition.id)
    system.settled_tally(petition.id)
    return petition.id


@pytest.mark.stack
def test_json_has_every_count_by_territory_and_country(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", counted)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)["petitions"]
    assert record["petition_id"] == counted
    assert record["total"] == 4
    assert record["by_territory"] == [
        {"code": "13", "name": "Bouches-du-Rhône", "signatures": 2},
        {"code": "971", "name": "Guadeloupe", "signatures": 1},
    ]
    assert record["by_country"] == [{"code": "BE", "signatures": 1}, {"code": "FR", "signatures": 3}]
    assert record["as_of"].endswith("Z")


@pytest.mark.stack
def test_csv_has_one_row_per_scope_and_code(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", "--format", "csv", counted)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "petition_id,as_of,scope,code,name,signatures"
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["scope"], r["code"], r["name"], r["signatures"]) for r in rows] == [
        ("total", "", "", "4"),
        ("territory", "13", "Bouches-du-Rhône", "2"),
        ("territory", "971", "Guadeloupe", "1"),
        ("country", "BE", "", "1"),
        ("country", "FR", "", "3"),
    ]
    assert {r["petition_id"] for r in rows} == {counted}


@pytest.mark.stack
def test_every_petition_is_published_when_none_is_named(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data")
    assert result.returncode == 0, result.stderr
    published = {record["petition_id"]: record["total"] for record in json.loads(result.stdout)["petitions"]}
    assert published[counted] == 4


@pytest.mark.stack
def test_an_unknown_petition_is_an_error(system: SystemClient) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", "no-such-petition")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr
    assert result.stdout == ""


def test_a_counted_code_that_is_no_territory_is_published_without_a_name() -> None:
    # "20" (Corse before 1976) is no territory, but a counter holding it (an
    # older identity let it through) is published as counted, name empty.
    tally = tally_pb2.PetitionTally(petition_id="p", total=3, by_territory={"2A": 2, "20": 1})
    record = open_data.as_record(tally)
    assert record["by_territory"] == [
        {"code": "20", "name": "", "signatures": 1},
        {"code": "2A", "name": "Corse-du-Sud", "signatures": 2},
    ]
    rows = list(csv.DictReader(io.StringIO(open_data.to_csv([tally]))))
    assert [(r["code"], r["name"]) for r in rows if r["scope"] == "territory"] == [("20", ""), ("2A", "Corse-du-Sud")]
