"""The petition state machine (services/petitions/lifecycle.py), for every
(state, action) pair, against a table written out here by hand from issue 14
rather than computed from the module: a change to a rule must change both."""

from __future__ import annotations

import re

import pytest

from services.petitions.lifecycle import (
    OPEN_ON_CREATE,
    Action,
    Actor,
    ActorNotAllowed,
    IllegalTransition,
    State,
    accepts_signatures,
    allowed_actors,
    check_actor,
    decide,
    initial_state,
    is_final,
    is_public,
    next_state,
    sources,
)

S = State
A = Action
__ = None  # illegal
DR, GS, SU, OP, RE = S.DRAFT, S.GATHERING_SPONSORS, S.SUBMITTED, S.OPEN, S.REJECTED
CL, CS, RS, DB, AR = S.CLOSED, S.CLASSED, S.RESPONDED, S.DEBATED, S.ARCHIVED

# Rows: the state a petition is in. Columns, in this order:
COLUMNS = (
    A.CREATE,
    A.UPDATE,
    A.SUBMIT,
    A.SPONSORS_COMPLETE,
    A.SPONSOR,
    A.OPEN,
    A.REJECT,
    A.ASSIGN,
    A.RAPPORTEUR,
    A.CLASS,
    A.CLOSE,
    A.RESPOND,
    A.DEBATE,
    A.ARCHIVE,
)
# With the defaults: no sponsors needed, an outcome leaves an open petition open.
# fmt: off
TABLE: dict[State, tuple[State | None, ...]] = {
    #    CREATE UPDATE SUBMIT SPONS_OK SPONSOR OPEN REJECT ASSIGN RAPPORTEUR CLASS CLOSE RESPOND DEBATE ARCHIVE
    DR: (__,    DR,    SU,    __,      __,     __,  __,    __,    __,        __,   __,   __,     __,    AR),
    GS: (__,    __,    __,    SU,      GS,     __,  __,    __,    __,        __,   __,   __,     __,    AR),
    SU: (__,    __,    __,    __,      __,     OP,  RE,    SU,    SU,        __,   __,   __,     __,    AR),
    OP: (__,    __,    __,    __,      __,     __,  __,    OP,    OP,        CS,   CL,   OP,     OP,    __),
    RE: (__,    __,    __,    __,      __,     __,  __,    __,    __,        __,   __,   __,     __,    AR),
    CL: (__,    __,    __,    __,      __,     __,  __,    CL,    CL,        __,   __,   RS,     DB,    AR),
    CS: (__,    __,    __,    __,      __,     __,  __,    CS,    CS,        __,   __,   RS,     DB,    AR),
    RS: (__,    __,    __,    __,      __,     __,  __,    RS,    RS,        __,   __,   RS,     DB,    AR),
    DB: (__,    __,    __,    __,      __,     __,  __,    DB,    DB,        __,   __,   DB,     DB,    AR),
    AR: (__,    __,    __,    __,      __,     __,  __,    __,    __,        __,   __,   __,     __,    __),
}
# fmt: on
PAIRS = [(state, action, row[i]) for state, row in TABLE.items() for i, action in enumerate(COLUMNS)]

# The only pairs whose answer depends on the keyword arguments.
WITH_SPONSORS = {(DR, A.SUBMIT): GS}
OUTCOME_ENDS_SIGNING = {(OP, A.RESPOND): RS, (OP, A.DEBATE): DB}


def test_the_table_covers_every_state_and_every_action() -> None:
    assert set(TABLE) == set(State)
    assert set(COLUMNS) == set(Action)
    assert all(len(row) == len(COLUMNS) for row in TABLE.values())


@pytest.mark.parametrize(("state", "action", "expected"), PAIRS, ids=[f"{s.name}-{a.value}" for s, a, _ in PAIRS])
def test_every_move(state: State, action: Action, expected: State | None) -> None:
    if expected is None:
        with pytest.raises(IllegalTransition) as refused:
            next_state(state, action)
        assert refused.value.state is state
        assert refused.value.action is action
        # The message names the state found and the action refused.
        assert str(refused.value).startswith(f"petition is {state.name}: {action.value!r} ")
    else:
        assert next_state(state, action) is expected


@pytest.mark.parametrize(("state", "action", "expected"), PAIRS, ids=[f"{s.name}-{a.value}" for s, a, _ in PAIRS])
def test_every_move_when_the_type_needs_sponsors(state: State, action: Action, expected: State | None) -> None:
    expected = WITH_SPONSORS.get((state, action), expected)
    if expected is None:
        with pytest.raises(IllegalTransition):
            next_state(state, action, needs_sponsors=True)
    else:
        assert next_state(state, action, needs_sponsors=True) is expected


@pytest.mark.parametrize(("state", "action", "expected"), PAIRS, ids=[f"{s.name}-{a.value}" for s, a, _ in PAIRS])
def test_every_move_when_an_outcome_ends_signing(state: State, action: Action, expected: State | None) -> None:
    expected = OUTCOME_ENDS_SIGNING.get((state, action), expected)
    if expected is None:
        with pytest.raises(IllegalTransition):
            next_state(state, action, outcome_on_open=True)
    else:
        assert next_state(state, action, outcome_on_open=True) is expected


@pytest.mark.parametrize(
    ("state", "action", "message"),
    [
        (S.OPEN, A.REJECT, "petition is OPEN: 'reject' is allowed only from SUBMITTED"),
        (S.DRAFT, A.OPEN, "petition is DRAFT: 'open' is allowed only from SUBMITTED"),
        (S.SUBMITTED, A.CLOSE, "petition is SUBMITTED: 'close' is allowed only from OPEN"),
        (S.CLOSED, A.CLASS, "petition is CLOSED: 'class' is allowed only from OPEN"),
        (
            S.DRAFT,
            A.RESPOND,
            "petition is DRAFT: 'respond' is allowed only from OPEN, CLOSED, CLASSED, RESPONDED or DEBATED",
        ),
        (
            S.OPEN,
            A.ARCHIVE,
            "petition is OPEN: 'archive' is allowed only from DRAFT, GATHERING_SPONSORS, SUBMITTED, REJECTED,"
            " CLOSED, CLASSED, RESPONDED or DEBATED (close it first)",
        ),
        (S.OPEN, A.CREATE, "petition is OPEN: 'create' starts a new petition, it is no move of one"),
    ],
)
def test_the_refusal_says_where_the_action_is_allowed(state: State, action: Action, message: str) -> None:
    with pytest.raises(IllegalTransition, match=f"^{re.escape(message)}$"):
        next_state(state, action)


def test_sources_are_the_states_an_action_is_legal_from() -> None:
    for i, action in enumerate(COLUMNS):
        assert sources(action) == {state for state, row in TABLE.items() if row[i] is not None}, action


def test_a_new_petition_is_a_draft_or_opened_directly() -> None:
    assert initial_state(open_now=False) is S.DRAFT
    assert initial_state(open_now=True) is S.OPEN
    assert {Actor.ADMINISTRATOR} == OPEN_ON_CREATE


# Who may do what, written out by hand.
ACTORS: dict[Action, set[Actor]] = {
    A.CREATE: {Actor.AUTHOR, Actor.ADMINISTRATOR},
    A.UPDATE: {Actor.AUTHOR},
    A.SUBMIT: {Actor.AUTHOR},
    A.SPONSORS_COMPLETE: {Actor.SYSTEM},
    A.SPONSOR: {Actor.SYSTEM},
    A.OPEN: {Actor.MODERATOR},
    A.REJECT: {Actor.MODERATOR},
    A.ASSIGN: {Actor.CLERK},
    A.RAPPORTEUR: {Actor.CLERK},
    A.CLASS: {Actor.CLERK},
    A.CLOSE: {Actor.CLERK, Actor.ADMINISTRATOR, Actor.SYSTEM},
    A.RESPOND: {Actor.CLERK},
    A.DEBATE: {Actor.CLERK},
    A.ARCHIVE: {Actor.ADMINISTRATOR, Actor.SYSTEM},
}


@pytest.mark.parametrize("action", list(Action), ids=[a.value for a in Action])
def test_allowed_actors(action: Action) -> None:
    assert allowed_actors(action) == ACTORS[action]
    for actor in Actor:
        if actor in ACTORS[action]:
            check_actor(actor, action)
        else:
            with pytest.raises(ActorNotAllowed) as refused:
                check_actor(actor, action)
            assert refused.value.actor is actor
            assert refused.value.action is action


def test_an_administrator_is_not_a_moderator_or_a_clerk() -> None:
    # Roles stay separate: a person who must act as both holds both roles.
    for action in (A.OPEN, A.REJECT, A.ASSIGN, A.CLASS, A.RESPOND, A.DEBATE):
        assert Actor.ADMINISTRATOR not in allowed_actors(action)


def test_the_actor_refusal_names_who_may() -> None:
    with pytest.raises(ActorNotAllowed, match=r"^a caller acting as moderator may not 'archive': only "):
        check_actor(Actor.MODERATOR, A.ARCHIVE)
    with pytest.raises(ActorNotAllowed, match=r"only moderator may$"):
        check_actor(Actor.CLERK, A.REJECT)


def test_decide_checks_the_role_before_the_state() -> None:
    # A caller without the role learns nothing of the state: refused as an
    # actor even where the move itself is illegal.
    with pytest.raises(ActorNotAllowed):
        decide(Actor.AUTHOR, S.OPEN, A.REJECT)
    with pytest.raises(IllegalTransition):
        decide(Actor.MODERATOR, S.OPEN, A.REJECT)
    assert decide(Actor.MODERATOR, S.SUBMITTED, A.REJECT) is S.REJECTED
    assert decide(Actor.AUTHOR, S.DRAFT, A.SUBMIT, needs_sponsors=True) is S.GATHERING_SPONSORS
    assert decide(Actor.CLERK, S.OPEN, A.DEBATE, outcome_on_open=True) is S.DEBATED


ACCEPTING = {S.OPEN}
PUBLIC = {S.GATHERING_SPONSORS, S.OPEN, S.REJECTED, S.CLOSED, S.CLASSED, S.RESPONDED, S.DEBATED, S.ARCHIVED}


@pytest.mark.parametrize("state", list(State), ids=[s.name for s in State])
def test_visibility_and_signing(state: State) -> None:
    assert accepts_signatures(state) is (state in ACCEPTING)
    assert is_public(state) is (state in PUBLIC)
    assert is_final(state) is (state is S.ARCHIVED)


def test_values_are_the_stored_names() -> None:
    assert [s.value for s in State] == [
        "draft",
        "gathering_sponsors",
        "submitted",
        "open",
        "rejected",
        "closed",
        "classed",
        "responded",
        "debated",
        "archived",
    ]
    assert A.SPONSORS_COMPLETE.value == "sponsors-complete"
    assert A.SPONSOR.value == "sponsor"
    # Staff credential roles convert to actors by value.
    assert [Actor(role) for role in ("moderator", "clerk", "administrator")] == [
        Actor.MODERATOR,
        Actor.CLERK,
        Actor.ADMINISTRATOR,
    ]


def test_the_whole_life_of_a_uk_petition() -> None:
    state = initial_state(open_now=False)
    for action, expected in [
        (A.UPDATE, S.DRAFT),
        (A.SUBMIT, S.GATHERING_SPONSORS),
        (A.SPONSOR, S.GATHERING_SPONSORS),
        (A.SPONSORS_COMPLETE, S.SUBMITTED),
        (A.OPEN, S.OPEN),
        (A.RESPOND, S.OPEN),
        (A.CLOSE, S.CLOSED),
        (A.DEBATE, S.DEBATED),
        (A.RESPOND, S.DEBATED),
        (A.ARCHIVE, S.ARCHIVED),
    ]:
        state = next_state(state, action, needs_sponsors=True)
        assert state is expected, action
