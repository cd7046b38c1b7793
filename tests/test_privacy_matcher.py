"""The privacy audit's matcher, on data made here: it finds what is there
(raw and lower-case forms, at any position, in any store) and only that."""

from __future__ import annotations

import pytest

from tests.privacy import find_leaks


def test_finds_raw_and_lower_case_forms_in_the_store_that_holds_them() -> None:
    stores = {
        "redis": [b"ledger:abc", b"...Jane.Doe+x@Gmail.com..."],
        "kafka": [b"\x00\x01key\x00value", "prefix jean-fran\u00e7ois dupont suffix".encode()],
        "cassandra": [b"('demo', 'nothing here')"],
    }
    found = find_leaks({"Jane.Doe+x@Gmail.com", "Jean-Fran\u00e7ois Dupont", "absent-person"}, stores)
    assert found == {("redis", "Jane.Doe+x@Gmail.com"), ("kafka", "Jean-Fran\u00e7ois Dupont")}


def test_a_match_never_spans_two_blobs() -> None:
    assert find_leaks({"abcdef"}, {"redis": [b"abc", b"def"]}) == set()


def test_identities_sharing_a_lower_case_form_are_each_reported() -> None:
    found = find_leaks({"Alice-Martin", "alice-martin"}, {"kafka": [b"x alice-martin y"]})
    assert found == {("kafka", "Alice-Martin"), ("kafka", "alice-martin")}


def test_no_identities_finds_nothing() -> None:
    assert find_leaks(set(), {"redis": [b"anything"]}) == set()


def test_an_identity_with_the_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="separator"):
        find_leaks({"a\x00b"}, {"redis": [b"a"]})


def test_thousands_of_identities_in_hundreds_of_thousands_of_blobs() -> None:
    # The shape that timed the old nested search out. Here it must be right;
    # the audit prints its real figures and time.
    identities = {f"persona-{n:05d}" for n in range(5_000)}
    blobs = [f"signature {n} of someone".encode() for n in range(300_000)] + [b"... persona-04242 ..."]
    assert find_leaks(identities, {"kafka": blobs}) == {("kafka", "persona-04242")}
