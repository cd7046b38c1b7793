"""Open data: a petition's counts by territory and country, published as JSON
and CSV by `petitions open-data`, equal to the live tally."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest

from tests.harness import run_cli
from tests.system import SystemClient

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def counted(system: SystemClient) -> str:
    petition = system.create_petition("Published as open data")
    for country, territory in (("FR", "13"), ("FR", "13"), ("FR", "971"), ("BE", "")):
        person = system.credential(f"od-{uuid.uuid4().hex[:8]}", country, territory)
        system.sign(person.token, petition.id)
    system.settled_tally(petition.id)
    return petition.id


def test_json_has_every_count_by_territory_and_country(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", counted)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)["petitions"]
    assert record["petition_id"] == counted
    assert record["total"] == 4
    assert record["by_territory"] == [{"code": "13", "signatures": 2}, {"code": "971", "signatures": 1}]
    assert record["by_country"] == [{"code": "BE", "signatures": 1}, {"code": "FR", "signatures": 3}]
    assert record["as_of"].endswith("Z")


def test_csv_has_one_row_per_scope_and_code(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", "--format", "csv", counted)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["scope"], r["code"], r["signatures"]) for r in rows] == [
        ("total", "", "4"),
        ("territory", "13", "2"),
        ("territory", "971", "1"),
        ("country", "BE", "1"),
        ("country", "FR", "3"),
    ]
    assert {r["petition_id"] for r in rows} == {counted}


def test_every_petition_is_published_when_none_is_named(system: SystemClient, counted: str) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data")
    assert result.returncode == 0, result.stderr
    published = {record["petition_id"]: record["total"] for record in json.loads(result.stdout)["petitions"]}
    assert published[counted] == 4


def test_an_unknown_petition_is_an_error(system: SystemClient) -> None:
    result = run_cli(system.namespace.env(system.stack), "open-data", "no-such-petition")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr
    assert result.stdout == ""
