"""The life of a petition: the one statement of which move is legal, and who
may make it.

Plain data and functions (no I/O), so that the server, the CLI and the tests
all read the same rules. The server decides every change with next_state()
on the state it read, then writes it with one conditional write on the
version it read: two staff deciding at once both get a legal answer from
here, and only one of them wins the write.

    DRAFT ─▶ GATHERING_SPONSORS (the type needs sponsors) ─▶ SUBMITTED
    GATHERING_SPONSORS ─▶ GATHERING_SPONSORS for each sponsor short of the
            number the type needs (the one that completes it submits)
    DRAFT ─▶ SUBMITTED (no sponsors needed)
    SUBMITTED ─▶ OPEN | REJECTED (moderator)
    OPEN ─▶ CLOSED (deadline, or staff) | CLASSED (filed by its committee)
    OPEN ─▶ OPEN on an outcome: a government response or a debate while
            signing goes on (UK: 10,000 → response, 100,000 → debate)
    CLOSED | CLASSED | RESPONDED ─▶ RESPONDED
    CLOSED | CLASSED | RESPONDED | DEBATED ─▶ DEBATED; a response after a
            debate keeps DEBATED (the furthest state stays)
    every state but OPEN and ARCHIVED ─▶ ARCHIVED (end of the legislature;
            an open petition is closed first, so that its close is on record)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType


class State(enum.Enum):
    """Values are the lower-case names stored in Cassandra and the audit trail."""

    DRAFT = "draft"
    GATHERING_SPONSORS = "gathering_sponsors"
    SUBMITTED = "submitted"
    OPEN = "open"
    REJECTED = "rejected"
    CLOSED = "closed"
    CLASSED = "classed"
    RESPONDED = "responded"
    DEBATED = "debated"
    ARCHIVED = "archived"


class Action(enum.Enum):
    """Values as written in AuditEntry.action."""

    CREATE = "create"
    UPDATE = "update"
    SUBMIT = "submit"
    SPONSORS_COMPLETE = "sponsors-complete"
    # One more sponsor counted, short of the type's number (the one that
    # completes it is SPONSORS_COMPLETE).
    SPONSOR = "sponsor"
    OPEN = "open"
    REJECT = "reject"
    ASSIGN = "assign"
    RAPPORTEUR = "rapporteur"
    CLASS = "class"
    CLOSE = "close"
    RESPOND = "respond"
    DEBATE = "debate"
    ARCHIVE = "archive"


class Actor(enum.Enum):
    """Who acts. The three staff values are the role names of staff
    credentials (servicekit.role_credentials), so Actor(role) converts."""

    AUTHOR = "author"
    MODERATOR = "moderator"
    CLERK = "clerk"
    ADMINISTRATOR = "administrator"
    SYSTEM = "system"


class IllegalTransition(Exception):
    """A move the state machine does not allow from the petition's state.
    The server answers it with FAILED_PRECONDITION and changes nothing."""

    def __init__(self, state: State, action: Action, message: str):
        super().__init__(message)
        self.state = state
        self.action = action


class ActorNotAllowed(Exception):
    """An actor the action is not for (PERMISSION_DENIED, nothing changed)."""

    def __init__(self, actor: Actor, action: Action):
        allowed = _names(a.value for a in _ACTORS[action])
        super().__init__(f"a caller acting as {actor.value} may not {action.value!r}: only {allowed} may")
        self.actor = actor
        self.action = action


# Every (state, action) → state that does not depend on the petition's type;
# SUBMIT and the outcomes on an open petition are resolved in next_state.
# The states at which a staff decision about the committee is meaningful: once
# the petition is in front of parliament, until it is archived.
_BEFORE_PARLIAMENT = (State.SUBMITTED, State.OPEN, State.CLOSED, State.CLASSED, State.RESPONDED, State.DEBATED)
_MOVES: Mapping[Action, Mapping[State, State]] = MappingProxyType(
    {
        Action.CREATE: {},
        Action.UPDATE: {State.DRAFT: State.DRAFT},
        # The target is GATHERING_SPONSORS or SUBMITTED by the type's sponsor
        # rule (next_state's needs_sponsors); SUBMITTED is the placeholder.
        Action.SUBMIT: {State.DRAFT: State.SUBMITTED},
        Action.SPONSORS_COMPLETE: {State.GATHERING_SPONSORS: State.SUBMITTED},
        Action.SPONSOR: {State.GATHERING_SPONSORS: State.GATHERING_SPONSORS},
        Action.OPEN: {State.SUBMITTED: State.OPEN},
        Action.REJECT: {State.SUBMITTED: State.REJECTED},
        Action.ASSIGN: {state: state for state in _BEFORE_PARLIAMENT},
        Action.RAPPORTEUR: {state: state for state in _BEFORE_PARLIAMENT},
        Action.CLASS: {State.OPEN: State.CLASSED},
        Action.CLOSE: {State.OPEN: State.CLOSED},
        Action.RESPOND: {
            State.OPEN: State.OPEN,
            State.CLOSED: State.RESPONDED,
            State.CLASSED: State.RESPONDED,
            State.RESPONDED: State.RESPONDED,
            State.DEBATED: State.DEBATED,
        },
        Action.DEBATE: {
            State.OPEN: State.OPEN,
            State.CLOSED: State.DEBATED,
            State.CLASSED: State.DEBATED,
            State.RESPONDED: State.DEBATED,
            State.DEBATED: State.DEBATED,
        },
        Action.ARCHIVE: {state: State.ARCHIVED for state in State if state not in (State.OPEN, State.ARCHIVED)},
    }
)

_ACTORS: Mapping[Action, frozenset[Actor]] = MappingProxyType(
    {
        # An author creates a draft; an administrator creates directly
        # (open at once, see OPEN_ON_CREATE).
        Action.CREATE: frozenset({Actor.AUTHOR, Actor.ADMINISTRATOR}),
        Action.UPDATE: frozenset({Actor.AUTHOR}),
        Action.SUBMIT: frozenset({Actor.AUTHOR}),
        # Counted by the service as sponsors sign, never claimed by a caller.
        Action.SPONSORS_COMPLETE: frozenset({Actor.SYSTEM}),
        Action.SPONSOR: frozenset({Actor.SYSTEM}),
        Action.OPEN: frozenset({Actor.MODERATOR}),
        Action.REJECT: frozenset({Actor.MODERATOR}),
        Action.ASSIGN: frozenset({Actor.CLERK}),
        Action.RAPPORTEUR: frozenset({Actor.CLERK}),
        Action.CLASS: frozenset({Actor.CLERK}),
        # The system closes at the deadline; staff close early.
        Action.CLOSE: frozenset({Actor.CLERK, Actor.ADMINISTRATOR, Actor.SYSTEM}),
        Action.RESPOND: frozenset({Actor.CLERK}),
        Action.DEBATE: frozenset({Actor.CLERK}),
        # The end of a legislature archives everything (administrator, or
        # the service when it applies a legislature's end).
        Action.ARCHIVE: frozenset({Actor.ADMINISTRATOR, Actor.SYSTEM}),
    }
)

# Roles are kept separate: an administrator who must also act as a clerk is
# given both roles, so the audit trail says in which capacity each act was
# done. The one exception is an administrator's direct creation of an open
# petition (the old CreatePetition with a state), which skips moderation:
# only these actors may create a petition already OPEN.
OPEN_ON_CREATE: frozenset[Actor] = frozenset({Actor.ADMINISTRATOR})

_ORDER = {state: index for index, state in enumerate(State)}


def _names(values: Iterable[str]) -> str:
    items = list(values)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def sources(action: Action) -> frozenset[State]:
    """The states from which action is legal."""
    return frozenset(_MOVES[action])


def initial_state(open_now: bool) -> State:
    """The state a new petition starts in: a draft its author edits, or OPEN
    for an administrator's direct creation (check OPEN_ON_CREATE)."""
    return State.OPEN if open_now else State.DRAFT


def next_state(state: State, action: Action, *, needs_sponsors: bool = False, outcome_on_open: bool = False) -> State:
    """The state after action, or IllegalTransition naming the state.

    needs_sponsors: the petition's type requires sponsors, so SUBMIT goes to
    GATHERING_SPONSORS (its sponsor link) rather than straight to SUBMITTED.
    outcome_on_open: recording this outcome (RESPOND, DEBATE) on an OPEN
    petition ends its signing too, moving it to RESPONDED or DEBATED; by
    default an outcome leaves an open petition OPEN (a UK government response
    at 10,000 signatures while signing goes on).
    """
    if action is Action.CREATE:
        raise IllegalTransition(
            state, action, f"petition is {state.name}: {action.value!r} starts a new petition, it is no move of one"
        )
    moves = _MOVES[action]
    target = moves.get(state)
    if target is None:
        allowed = _names(s.name for s in sorted(moves, key=_ORDER.__getitem__))
        message = f"petition is {state.name}: {action.value!r} is allowed only from {allowed}"
        if action is Action.ARCHIVE and state is State.OPEN:
            message += " (close it first)"
        raise IllegalTransition(state, action, message)
    if action is Action.SUBMIT:
        return State.GATHERING_SPONSORS if needs_sponsors else State.SUBMITTED
    if state is State.OPEN and outcome_on_open and action in (Action.RESPOND, Action.DEBATE):
        return State.RESPONDED if action is Action.RESPOND else State.DEBATED
    return target


def allowed_actors(action: Action) -> frozenset[Actor]:
    """Who may take action (the server checks the caller's role against it)."""
    return _ACTORS[action]


def check_actor(actor: Actor, action: Action) -> None:
    """Raises ActorNotAllowed unless actor may take action."""
    if actor not in _ACTORS[action]:
        raise ActorNotAllowed(actor, action)


def decide(
    actor: Actor, state: State, action: Action, *, needs_sponsors: bool = False, outcome_on_open: bool = False
) -> State:
    """check_actor, then next_state: the role is checked before the state, so
    a caller without the role learns nothing about the petition's state."""
    check_actor(actor, action)
    return next_state(state, action, needs_sponsors=needs_sponsors, outcome_on_open=outcome_on_open)


def accepts_signatures(state: State) -> bool:
    """Only an OPEN petition takes signatures (its time window is checked by
    signing, against opens_at and closes_at)."""
    return state is State.OPEN


def is_public(state: State) -> bool:
    """Visible to the public: everything but a draft and a petition waiting
    for moderation. GATHERING_SPONSORS is visible, as sponsors follow a link
    to it; REJECTED is, as the UK publishes rejections with their reason."""
    return state not in (State.DRAFT, State.SUBMITTED)


def is_final(state: State) -> bool:
    """Nothing moves an ARCHIVED petition."""
    return state is State.ARCHIVED
