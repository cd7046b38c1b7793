"""The committee registry and the suggester that proposes a committee for a
petition from its title and text (issue 14, part 6).

The rules are weighted keywords per committee, in data/committees.json, so
that a clerk can read why a committee was proposed and tune the file: no
model, no training, the same answer for the same petition every time. The
suggestion is only a proposal; a clerk confirms or reassigns.

Matching:
- case- and accent-insensitive: both sides are decomposed (NFKD), combining
  marks dropped and casefolded, so "École", "ECOLE" and "ecole" are one word;
- whole words only: "ecolo" does not match "école" nor "écologie";
- a keyword of several words matches as a phrase (the same words in a row,
  joined by spaces, hyphens or apostrophes only, typographic ones included:
  "droit d'auteur" matches "Droit-d'Auteur", not "droit. D'auteur");
- "a|b" in a keyword lists forms of one rule ("retraite|retraites"): the
  rule counts once, whichever form is found;
- each rule counts once per petition: for a rule on "any", a hit in the
  title weighs twice its weight (said in the explanation), otherwise a hit in
  the text weighs its weight; a "title" or "text" rule weighs its weight
  where it applies.
Suggestions are sorted by score, highest first, then by committee id.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from services.petitions.config_files import DATA, Fields, number, read_json, unique

COMMITTEES_FILE = DATA / "committees.json"
Where = Literal["title", "text", "any"]
WHERE: tuple[Where, ...] = ("title", "text", "any")
TITLE_FACTOR = 2.0

_WORD = re.compile(r"[^\W_]+")
# What may stand between two words of a phrase: spaces, hyphens, apostrophes.
_JOINER = re.compile(r"[\s\-\u2010\u2011'\u2019\u02bc]*")


@dataclass(frozen=True)
class Rule:
    where: Where
    # One form, or forms separated by "|", as the clerk wrote them.
    keyword: str
    weight: float

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(form.strip() for form in self.keyword.split("|"))


@dataclass(frozen=True)
class Committee:
    id: str
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Suggestion:
    committee: str
    score: float
    # One line per rule that counted, in the rules' order, e.g.
    # "'retraite' in the text: +2".
    explanation: tuple[str, ...]


def normalize(text: str) -> str:
    """Accents and case removed: NFKD, combining marks dropped, casefolded."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _words(form: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(normalize(form)))


class _Words:
    """A title or text as words, each with the run of phrase it belongs to:
    a phrase matches only inside one run (no sentence punctuation between)."""

    def __init__(self, text: str):
        self.words: list[str] = []
        self.runs: list[int] = []
        self.positions: dict[str, list[int]] = {}
        run = 0
        end = 0
        normalized = normalize(text)
        for match in _WORD.finditer(normalized):
            if self.words and not _JOINER.fullmatch(normalized, end, match.start()):
                run += 1
            end = match.end()
            self.positions.setdefault(match.group(), []).append(len(self.words))
            self.words.append(match.group())
            self.runs.append(run)

    def has(self, phrase: tuple[str, ...]) -> bool:
        size = len(phrase)
        for start in self.positions.get(phrase[0], ()):
            stop = start + size
            if (
                stop <= len(self.words)
                and tuple(self.words[start:stop]) == phrase
                and self.runs[start] == self.runs[stop - 1]
            ):
                return True
        return False


def _found(rule: Rule, words: _Words) -> str | None:
    """The first of the rule's forms present in words."""
    for form in rule.forms:
        phrase = _words(form)
        # A form of no word (possible in a Rule made in code, never from a
        # file) matches nothing rather than everything.
        if phrase and words.has(phrase):
            return form
    return None


def suggest(committees: Mapping[str, Committee], title: str, text: str, limit: int = 3) -> list[Suggestion]:
    """Up to limit committees whose rules the petition matches, best first
    (score descending, then id); none when nothing matches."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    title_words, text_words = _Words(title), _Words(text)
    suggestions: list[Suggestion] = []
    for committee in committees.values():
        score = 0.0
        explanation: list[str] = []
        for rule in committee.rules:
            in_title = _found(rule, title_words) if rule.where in ("title", "any") else None
            in_text = _found(rule, text_words) if in_title is None and rule.where in ("text", "any") else None
            if in_title is not None and rule.where == "any":
                gained, place = rule.weight * TITLE_FACTOR, f"'{in_title}' in the title (weight x{TITLE_FACTOR:g})"
            elif in_title is not None:
                gained, place = rule.weight, f"'{in_title}' in the title"
            elif in_text is not None:
                gained, place = rule.weight, f"'{in_text}' in the text"
            else:
                continue
            score += gained
            explanation.append(f"{place}: +{gained:g}")
        if explanation:
            # Rounded so that sums of the same weights in another order tie.
            suggestions.append(Suggestion(committee.id, round(score, 6), tuple(explanation)))
    suggestions.sort(key=lambda s: (-s.score, s.committee))
    return suggestions[:limit]


def load_committees(path: Path | None = None) -> Mapping[str, Committee]:
    """The registry, in the file's order; None = the packaged data/committees.json."""
    path = path or COMMITTEES_FILE
    document = Fields(path, "", read_json(path))
    committees = [_committee(entry) for entry in document.objects("committees")]
    unique(path, document.field_name("committees"), [c.id for c in committees], "committee id")
    document.done()
    return MappingProxyType({c.id: c for c in committees})


def _committee(entry: Fields) -> Committee:
    committee_id = entry.identifier("id")
    name = entry.string("name")
    groups = entry.mapping("rules")
    rules_field = Fields(entry.path, entry.field_name("rules"), groups)
    rules: list[Rule] = []
    seen: dict[tuple[str, ...], str] = {}
    # In the file's order, which is the order of the explanation's lines.
    for group in list(groups):
        where = next((w for w in WHERE if w == group), None)
        if where is None:
            rules_field.fail(group, f"is not a group of rules: use {', '.join(WHERE)}")
        weights = rules_field.mapping(where)
        for keyword, weight in weights.items():
            place = f"{rules_field.field_name(where)}[{keyword!r}]"
            rule = Rule(where=where, keyword=keyword, weight=number(entry.path, place, weight))
            for form, words in _forms_of(entry.path, place, rule.forms):
                if words in seen and seen[words] != place:
                    raise ValueError(
                        f"{entry.path}: {place}: the form {form!r} is already a keyword of {seen[words]}"
                        " (forms are compared without accents or case; each would count)"
                    )
                seen[words] = place
            rules.append(rule)
    rules_field.done()
    if not rules:
        entry.fail("rules", "has no keyword: the committee could never be suggested")
    entry.done()
    return Committee(committee_id, name, tuple(rules))


def _forms_of(path: Path, place: str, forms: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Each form with the words it matches; a form without a word is refused."""
    found = []
    for form in forms:
        words = _words(form)
        if not words:
            raise ValueError(f"{path}: {place}: the form {form!r} has no word to match")
        found.append((form, words))
    return found
