"""The privacy audit's matcher: which raw identities occur in which store.

Every identity is searched in its raw and its lower-case form, as bytes
(UTF-8), in every blob a store gave. One Aho-Corasick automaton holds every
variant of every identity and walks each store's contents once, so the cost
grows with what the stores hold plus the matches found, not with identities
times blobs (the nested search it replaces took minutes once the suite had
used a few hundred identities and written a few hundred thousand records).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ahocorasick

# Joins a store's blobs into one text. No identity contains it, so no match
# can span two blobs.
SEPARATOR = b"\x00"


def _as_text(data: bytes) -> str:
    # Latin-1 maps each byte to one code point and back, so a str search over
    # it is exactly a byte search over the original (the automaton is built
    # for str keys).
    return data.decode("latin-1")


def variants(identity: str) -> set[bytes]:
    return {identity.encode(), identity.lower().encode()}


def find_leaks(identities: Iterable[str], stores: Mapping[str, Iterable[bytes]]) -> set[tuple[str, str]]:
    """(store, identity) for every identity found in a store's blobs."""
    # Two identities may share a variant ("Alice" and "alice"): each variant
    # names all of its identities.
    owners: dict[bytes, set[str]] = {}
    for identity in identities:
        if SEPARATOR.decode() in identity:
            raise ValueError(f"an identity may not contain the separator: {identity!r}")
        for variant in variants(identity):
            owners.setdefault(variant, set()).add(identity)
    if not owners:
        return set()
    automaton = ahocorasick.Automaton()
    for variant, names in owners.items():
        automaton.add_word(_as_text(variant), tuple(sorted(names)))
    automaton.make_automaton()
    leaks: set[tuple[str, str]] = set()
    for store, blobs in stores.items():
        text = _as_text(SEPARATOR.join(blobs))
        for _, names in automaton.iter(text):
            leaks.update((store, name) for name in names)
    return leaks
