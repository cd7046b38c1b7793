"""The reference list of territory codes shipped with the project: INSEE's
départements and overseas collectivities, whole codes only, each with its
French name."""

from __future__ import annotations

import unicodedata

import pytest

from loadtests.population import DEPARTEMENTS
from servicekit import territories

METROPOLITAN = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
OVERSEAS_DEPARTEMENTS = {"971", "972", "973", "974", "976"}
OVERSEAS_COLLECTIVITIES = {"975", "977", "978", "984", "986", "987", "988", "989"}


def test_the_list_is_the_departements_and_the_overseas_collectivities() -> None:
    assert set(territories.codes()) == METROPOLITAN | OVERSEAS_DEPARTEMENTS | OVERSEAS_COLLECTIVITIES
    assert len(territories.codes()) == 96 + 5 + 8


@pytest.mark.parametrize("code", ["75", "01", "95", "2A", "2B", "971", "976", "975", "988", "989"])
def test_real_codes_are_valid(code: str) -> None:
    assert territories.is_valid(code)


@pytest.mark.parametrize(
    "code",
    ["20", "00", "96", "1", "100", "970", "979", "985", "2C", "2a", "", "75\n", "75\r\n", "75\x00", " 75", "075"],
)
def test_anything_else_is_not(code: str) -> None:
    assert not territories.is_valid(code)
    assert territories.name_of(code) == ""


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("13", "Bouches-du-Rhône"),
        ("2A", "Corse-du-Sud"),
        ("2B", "Haute-Corse"),
        ("21", "Côte-d'Or"),
        ("75", "Paris"),
        ("90", "Territoire de Belfort"),
        ("974", "La Réunion"),
        ("984", "Terres australes et antarctiques françaises"),
    ],
)
def test_each_code_has_its_french_name(code: str, name: str) -> None:
    assert territories.name_of(code) == name


def test_names_are_clean_accented_text() -> None:
    for code in territories.codes():
        name = territories.name_of(code)
        assert name == name.strip()
        assert unicodedata.normalize("NFC", name) == name, code
        # UTF-8 read as Latin-1 would show as "Ã¨" and the like.
        assert "Ã" not in name
        assert "\ufffd" not in name


def test_the_load_tests_places_are_valid_territories() -> None:
    assert [code for code in DEPARTEMENTS if not territories.is_valid(code)] == []
