"""The committee registry and suggester (services/petitions/committees.py):
known petitions go to the committee a clerk would pick, matching ignores
case and accents but never matches part of a word, ties and order are
deterministic, every score is explained, and a bad registry file is refused
naming the file and the field."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from services.petitions.committees import Committee, Rule, Suggestion, load_committees, normalize, suggest


def registry(*committees: Committee) -> dict[str, Committee]:
    return {c.id: c for c in committees}


def one(committee_id: str, *rules: Rule) -> Committee:
    return Committee(committee_id, committee_id.title(), rules)


def any_rule(keyword: str, weight: float = 1.0) -> Rule:
    return Rule("any", keyword, weight)


def test_the_registry_holds_the_eight_standing_committees() -> None:
    committees = load_committees()
    assert list(committees) == [
        "affaires-culturelles",
        "affaires-economiques",
        "affaires-etrangeres",
        "affaires-sociales",
        "defense-nationale",
        "developpement-durable",
        "finances",
        "lois",
    ]
    assert committees["affaires-sociales"].name == "Commission des affaires sociales"
    assert committees["lois"].name.startswith("Commission des lois constitutionnelles, de la législation")
    for committee in committees.values():
        assert committee.rules, committee.id


KNOWN = [
    (
        "Abrogation de la réforme des retraites",
        "Nous demandons le retour de l'âge de départ à la retraite à 62 ans.",
        "affaires-sociales",
    ),
    ("Des soignants dans chaque hôpital", "Les urgences ferment faute d'infirmières.", "affaires-sociales"),
    ("Pour une taxe sur les superprofits", "Les grandes entreprises doivent payer leur juste part.", "finances"),
    ("Supprimer la TVA sur les produits de première nécessité", "", "finances"),
    ("Plus de moyens pour l'École publique", "Les enseignants manquent.", "affaires-culturelles"),
    ("Référendum d'initiative citoyenne", "Inscrire le RIC dans la Constitution.", "lois"),
    ("Des peines plus lourdes pour les agressions de policiers", "", "lois"),
    ("Rétablir le service militaire obligatoire", "Un an sous les drapeaux.", "defense-nationale"),
    (
        "Sauvons les petites lignes de train",
        "La SNCF ferme des lignes dans les zones rurales.",
        "developpement-durable",
    ),
    ("Interdire le glyphosate", "Il tue la biodiversité et pollue l'eau des rivières.", "developpement-durable"),
    ("Soutien aux agriculteurs", "Les prix payés aux éleveurs sont trop bas.", "affaires-economiques"),
    ("Encadrer les loyers partout", "Les locataires ne peuvent plus se loger.", "affaires-economiques"),
    (
        "La France doit reconnaître l'État de Palestine",
        "Par un acte diplomatique et un vote à l'ONU.",
        "affaires-etrangeres",
    ),
]


@pytest.mark.parametrize(("title", "text", "expected"), KNOWN, ids=[k[2] + ":" + k[0][:30] for k in KNOWN])
def test_known_petitions_go_to_the_expected_committee(title: str, text: str, expected: str) -> None:
    suggestions = suggest(load_committees(), title, text)
    assert suggestions, "no suggestion"
    assert suggestions[0].committee == expected, suggestions
    assert suggestions[0].explanation


def test_the_explanation_says_what_counted_and_how_much() -> None:
    committees = registry(
        one(
            "sociales",
            any_rule("retraite", 2),
            Rule("text", "pension", 1.5),
            Rule("title", "urgent", 1),
            any_rule("santé", 3),
        )
    )
    [suggestion] = suggest(committees, "La retraite, urgent !", "Ma pension et la santé.")
    assert suggestion == Suggestion(
        "sociales",
        4 + 1.5 + 1 + 3,
        (
            "'retraite' in the title (weight x2): +4",
            "'pension' in the text: +1.5",
            "'urgent' in the title: +1",
            "'santé' in the text: +3",
        ),
    )


def test_title_and_text_rules_look_only_where_they_say() -> None:
    committees = registry(one("c", Rule("title", "impôt", 5), Rule("text", "taxe", 1)))
    assert suggest(committees, "Une taxe", "Un impôt") == []
    [found] = suggest(committees, "Un impôt", "Une taxe")
    assert found.score == 6
    assert found.explanation == ("'impôt' in the title: +5", "'taxe' in the text: +1")


def test_each_rule_counts_once() -> None:
    committees = registry(one("c", any_rule("retraite", 2)))
    [in_both] = suggest(committees, "Retraite", "retraite " * 50)
    assert in_both.score == 4
    assert in_both.explanation == ("'retraite' in the title (weight x2): +4",)
    [in_text] = suggest(committees, "Une réforme", "retraite retraite retraite")
    assert in_text.score == 2


def test_forms_of_one_rule_count_once_and_the_found_form_is_named() -> None:
    committees = registry(one("c", any_rule("retraite|retraites|retraités", 3)))
    [both] = suggest(committees, "", "les retraités et leurs retraites")
    assert both.score == 3
    assert both.explanation == ("'retraites' in the text: +3",)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("école", "ÉCOLE"),
        ("école", "ecole"),
        ("ecole", "L'École de la République"),
        ("Ecole", "l\u2019école"),  # a typographic apostrophe
        ("fiscalité", "ﬁscalité"),  # the fi ligature, decomposed by NFKD
        ("strasse", "Straße"),  # casefold, not lower()
        ("noël", "NOE\u0308L"),  # a combining diaeresis rather than ë
        ("île-de-france", "Île de France"),
    ],
)
def test_case_and_accents_do_not_matter(keyword: str, text: str) -> None:
    assert [s.committee for s in suggest(registry(one("c", any_rule(keyword))), "", text)] == ["c"]


@pytest.mark.parametrize(
    ("keyword", "text"),
    [
        ("ecolo", "école"),
        ("ecolo", "l'écologie"),
        ("ecolo", "les écolos"),
        ("école", "écolo"),
        ("tax", "une taxe"),
        ("taxe", "la taxation"),
        ("art", "la partie"),
        ("eau", "le réseau"),
        ("ric", "l'Afrique"),
    ],
)
def test_part_of_a_word_never_matches(keyword: str, text: str) -> None:
    assert suggest(registry(one("c", any_rule(keyword))), text, text) == []


def test_a_whole_word_matches_whatever_surrounds_it() -> None:
    committees = registry(one("c", any_rule("écolo")))
    for text in ("écolo", "(écolo)", "un écolo.", "l'écolo", "anti-écolo", "«écolo»", "2025:écolo"):
        assert suggest(committees, "", text) != [], text


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("la Sécurité sociale", True),
        ("la sécurité  sociale", True),
        ("la sécurité\nsociale", True),
        ("sécurité-sociale", True),
        ("la sécurité et la vie sociale", False),
        ("sociale sécurité", False),
        ("la sécurité. Sociale, elle", False),
        ("la sécurité, sociale", False),
        ("la sécurité socialement", False),
    ],
)
def test_a_keyword_of_several_words_matches_as_a_phrase(text: str, matches: bool) -> None:
    found = suggest(registry(one("c", any_rule("sécurité sociale"))), "", text)
    assert bool(found) is matches


def test_apostrophes_of_either_kind_join_a_phrase() -> None:
    committees = registry(one("c", any_rule("droit d'auteur")))
    assert suggest(committees, "", "le droit d\u2019auteur des artistes")
    assert suggest(committees, "", "le droit d'auteur")
    assert not suggest(committees, "", "le droit, d'auteur")


def test_ties_are_broken_by_committee_id_whatever_the_registry_order() -> None:
    committees = [one(name, any_rule("budget", 2)) for name in ("lois", "finances", "affaires-sociales")]
    expected = ["affaires-sociales", "finances", "lois"]
    for _ in range(5):
        random.shuffle(committees)
        assert [s.committee for s in suggest(registry(*committees), "", "le budget")] == expected


def test_sums_of_the_same_value_tie_whatever_their_terms() -> None:
    # 0.1 + 0.2 is not 0.3 in floating point; scores are rounded so they tie.
    committees = registry(one("b", any_rule("un", 0.1), any_rule("deux", 0.2)), one("a", any_rule("trois", 0.3)))
    found = suggest(committees, "", "un deux trois")
    assert [(s.committee, s.score) for s in found] == [("a", 0.3), ("b", 0.3)]


def test_higher_scores_first_and_the_limit() -> None:
    committees = registry(
        one("a", any_rule("x", 1)), one("b", any_rule("x", 3)), one("c", any_rule("x", 2)), one("d", any_rule("y"))
    )
    assert [s.committee for s in suggest(committees, "", "x")] == ["b", "c", "a"]
    assert [s.committee for s in suggest(committees, "", "x", limit=1)] == ["b"]
    assert [s.committee for s in suggest(committees, "", "x y", limit=10)] == ["b", "c", "a", "d"]
    with pytest.raises(ValueError, match=r"^limit must be at least 1, got 0$"):
        suggest(committees, "", "x", limit=0)


@pytest.mark.parametrize(("title", "text"), [("", ""), ("   ", "\n\t"), ("?!", "… — ."), ("zzz", "qwerty")])
def test_nothing_to_match_suggests_nothing(title: str, text: str) -> None:
    assert suggest(load_committees(), title, text) == []


def test_the_same_petition_gets_the_same_answer() -> None:
    committees = load_committees()
    title, text = KNOWN[0][0], " ".join(k[1] for k in KNOWN)
    first = suggest(committees, title, text, limit=8)
    assert len(first) > 3
    reordered = dict(reversed(list(committees.items())))
    for _ in range(3):
        assert suggest(committees, title, text, limit=8) == first
        assert suggest(reordered, title, text, limit=8) == first


def test_normalize() -> None:
    assert normalize("Élève ÇA ﬁ Straße") == "eleve ca fi strasse"


def test_a_long_petition_is_cheap() -> None:
    # A petition's text may be long; matching stays linear in its words.
    text = "Nous demandons des moyens pour nos hôpitaux et la retraite. " * 2_000
    [first, *_] = suggest(load_committees(), "Santé", text)
    assert first.committee == "affaires-sociales"


# Registry files.
def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_registry_of_its_own(tmp_path: Path) -> None:
    path = write(
        tmp_path / "committees.json",
        {
            "committees": [
                {"id": "petitions", "name": "Petitions", "rules": {"title": {"pétition": 2}, "text": {"x|y": 0.5}}},
                {"id": "other", "name": "Other", "rules": {"any": {"autre chose": 1}}},
            ]
        },
    )
    committees = load_committees(path)
    assert list(committees) == ["petitions", "other"]
    assert committees["petitions"] == Committee(
        "petitions", "Petitions", (Rule("title", "pétition", 2.0), Rule("text", "x|y", 0.5))
    )


def _committee(**rules: object) -> dict[str, object]:
    return {"id": "c", "name": "C", "rules": rules}


BAD = [
    ("weight-zero", [_committee(any={"a": 0})], "committees[0].rules.any['a']: must be a positive number, got 0"),
    ("weight-negative", [_committee(any={"a": -1})], "committees[0].rules.any['a']: must be a positive number"),
    ("weight-text", [_committee(any={"a": "2"})], "committees[0].rules.any['a']: must be a positive number"),
    ("weight-bool", [_committee(any={"a": True})], "committees[0].rules.any['a']: must be a positive number"),
    ("where-unknown", [_committee(body={"a": 1})], "committees[0].rules.body: is not a group of rules: use title,"),
    ("no-rules", [_committee()], "committees[0].rules: has no keyword: the committee could never be suggested"),
    ("no-word", [_committee(any={"--": 1})], "committees[0].rules.any['--']: the form '--' has no word to match"),
    ("empty-form", [_committee(any={"a|": 1})], "committees[0].rules.any['a|']: the form '' has no word to match"),
    (
        "form-in-two-rules",
        [_committee(any={"école": 1}, text={"Ecole|lycée": 2})],
        "committees[0].rules.text['Ecole|lycée']: the form 'Ecole' is already a keyword of"
        " committees[0].rules.any['école']",
    ),
    (
        "id-twice",
        [_committee(any={"a": 1}), _committee(any={"b": 1})],
        "committees: the committee id 'c' appears twice",
    ),
    ("id-bad", [{"id": "Lois", "name": "L", "rules": {"any": {"a": 1}}}], "committees[0].id: must be 1 to 32"),
    ("name-missing", [{"id": "c", "rules": {"any": {"a": 1}}}], "committees[0].name: is missing"),
    ("field-typo", [{**_committee(any={"a": 1}), "rule": {}}], "committees[0].rule: is not a known field"),
    ("none", [], "committees: must be a non-empty list"),
]


@pytest.mark.parametrize(("committees", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_registry_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, committees: list[object], message: str
) -> None:
    path = write(tmp_path / "committees.json", {"committees": committees})
    with pytest.raises(ValueError, match=f"^{re.escape(f'{path}: {message}')}"):
        load_committees(path)


def test_a_keyword_given_twice_in_one_group_is_refused(tmp_path: Path) -> None:
    # JSON itself would keep the second weight silently.
    path = tmp_path / "committees.json"
    path.write_text('{"committees": [{"id": "c", "name": "C", "rules": {"any": {"a": 1, "a": 2}}}]}', encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: the key 'a' appears twice in one object$"):
        load_committees(path)
