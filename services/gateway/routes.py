"""The gateway's one route table: the router is built from it
(route_defs) and so are the OpenAPI document's paths (openapi.py), so a
route cannot be served without being documented, nor documented without
being served.

Each route names its handler as the function of its class (e.g.
PublicApi.sign); route_defs binds it to the instance the server made. What
the code cannot tell the document (a summary, the parameters, the bodies,
the error statuses an operation may answer) is written next to the route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from google.protobuf.message import Message

from petitions.v1 import petitions_pb2
from servicekit import territories
from servicekit.petition_ids import PETITION_ID_SCHEMA_PATTERN
from services.gateway.api import (
    MAX_FILTER,
    MAX_IDEMPOTENCY_KEY,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN,
    STATE_CHOICES,
    PublicApi,
)
from services.gateway.auth import AUTHOR_SIGN_IN_COOKIE, DISPLAY_NAME_FORMS, SignIn
from services.gateway.inputs import MAX_CLIENT_TIMEOUT_MS, MIN_CLIENT_TIMEOUT_MS, TIMEOUT_HEADER
from services.gateway.pages import STATIC_DIR, Pages
from services.gateway.petition_life import IN_PATH, MAX_AUDIT_PAGE, PetitionLife

Schema = dict[str, Any]
Handler = Callable[[Any, web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # path, query or header
    schema: Schema
    description: str
    required: bool = False


@dataclass(frozen=True)
class Body:
    """A JSON request body."""

    properties: dict[str, Schema]
    required: tuple[str, ...] = ()
    body_required: bool = True


@dataclass(frozen=True)
class MessageBody:
    """A JSON request body that is the proto3 JSON of a request message, but
    for the fields in omit (the path's petition id, a credential). Every
    field is optional, as in proto3; the service checks the values."""

    message: type[Message]
    omit: frozenset[str] = IN_PATH


@dataclass(frozen=True)
class Answer:
    """One answer an operation gives besides its errors. schema is the name
    of a components schema, or an inline schema; None: no body."""

    status: int
    description: str
    schema: str | Schema | None = None
    content_type: str = JSON
    # ETag and Cache-Control: the answer may be cached and revalidated.
    cached: bool = False


@dataclass(frozen=True)
class Operation:
    operation_id: str
    summary: str
    answers: tuple[Answer, ...]
    description: str | None = None
    parameters: tuple[Parameter, ...] = ()
    body: Body | MessageBody | None = None
    # Who signs the request in: "signer" (the signer cookie or a Bearer
    # signer credential), "author" (the author cookie or a Bearer author
    # credential), "staff" (a Bearer staff credential only); None: nobody.
    sign_in: str | None = None
    # Answers 304 to a current If-None-Match.
    revalidated: bool = False
    # The error statuses besides those every operation may answer (400,
    # 429, 503, 504); None: an operation without the Error answers (probes).
    errors: tuple[int, ...] | None = ()


@dataclass(frozen=True)
class Route:
    method: str
    # The router's path. A placeholder whose pattern is one literal word
    # ({format:csv}) is that word in the document.
    path: str
    handler: Handler
    # None: served but not part of the API (the web page, the document itself).
    operation: Operation | None
    # aiohttp answers HEAD for a GET unless told not to; a redirect or a
    # stream has no use for it.
    allow_head: bool = True

    @property
    def documented_path(self) -> str:
        return re.sub(r"\{\w+:(\w+)\}", r"\1", self.path)


PETITION = Parameter(
    "petition_id", "path", {"type": "string", "pattern": PETITION_ID_SCHEMA_PATTERN}, "The petition's id, e.g. demo."
)
IF_NONE_MATCH = Parameter("If-None-Match", "header", {"type": "string"}, "An ETag from an earlier answer.")
TIMEOUT = Parameter(
    TIMEOUT_HEADER,
    "header",
    {"type": "integer", "minimum": MIN_CLIENT_TIMEOUT_MS, "maximum": MAX_CLIENT_TIMEOUT_MS},
    "Answer within this many milliseconds (shortens the gateway's own budget; passed on to gRPC as the deadline).",
)
IDEMPOTENCY_KEY: Schema = {"type": "string", "minLength": 8, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "^[!-~]+$"}
READINESS: Schema = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "backends": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
    "required": ["status", "backends"],
    "additionalProperties": False,
}
OPEN_DATA = "/api/v1/petitions/{petition_id}/open-data.{format:%s}"
PAGE_SIZE = Parameter(
    "page_size", "query", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE}, "0: the default."
)
PAGE_TOKEN = Parameter(
    "page_token", "query", {"type": "string", "maxLength": MAX_PAGE_TOKEN}, "next_page_token of a page."
)
LISTING = (
    Parameter(
        "state",
        "query",
        {"type": "string", "enum": list(STATE_CHOICES)},
        "Only petitions in this state: its enum name or its short name (submitted).",
    ),
    Parameter("type", "query", {"type": "string", "maxLength": MAX_FILTER}, "Only petitions of this type."),
    Parameter(
        "committee", "query", {"type": "string", "maxLength": MAX_FILTER}, "Only petitions assigned to this committee."
    ),
    Parameter(
        "legislature", "query", {"type": "string", "maxLength": MAX_FILTER}, "Only petitions of this legislature."
    ),
    PAGE_SIZE,
    PAGE_TOKEN,
)
# What a change may answer besides 400, 429, 503 and 504: no or a bad
# credential, the wrong kind or role, an unknown petition, type, committee
# or reason, an id already taken, the body's size and type. A move the
# petition's state does not allow is 400 FAILED_PRECONDITION
# (ILLEGAL_TRANSITION, VERSION_CONFLICT).
CHANGE_ERRORS = (401, 403, 404, 409, 413, 415)
READ_ERRORS = (401, 403, 404)
RETURN_TO = Parameter(
    "return_to",
    "query",
    {"type": "string"},
    "A path on this site to come back to; anything else (another site, over 512 characters) comes back to /.",
)
CALLBACK = (
    Parameter("code", "query", {"type": "string"}, "The one-time code."),
    Parameter("state", "query", {"type": "string"}, "The state sent at the start."),
    Parameter("error", "query", {"type": "string"}, "The provider's refusal, if any."),
)


def _staff_change(action: str, operation_id: str, summary: str, message: type[Message]) -> Route:
    return Route(
        "POST",
        f"/api/v1/staff/petitions/{{petition_id}}/{action}",
        getattr(PetitionLife, _STAFF_HANDLERS[action]),
        Operation(
            operation_id,
            summary,
            sign_in="staff",
            parameters=(PETITION, TIMEOUT),
            body=MessageBody(message),
            answers=(Answer(200, "The petition after the change.", "Petition"),),
            errors=CHANGE_ERRORS,
        ),
    )


_STAFF_HANDLERS = {
    "review": "review",
    "assign": "assign",
    "rapporteur": "name_rapporteur",
    "class": "class_petition",
    "close": "close",
    "outcomes": "record_outcome",
}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/v1/petitions",
        PublicApi.list_petitions,
        Operation(
            "listPetitions",
            "Published petitions, newest first, optionally by state, type, committee or legislature.",
            description="Drafts and petitions waiting for moderation are never listed here (see listStaffQueue).",
            parameters=(*LISTING, IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "A page of petitions.", "ListPetitionsResponse", cached=True),),
            revalidated=True,
        ),
    ),
    Route(
        "GET",
        "/api/v1/petitions/{petition_id}",
        PublicApi.get_petition,
        Operation(
            "getPetition",
            (
                "One published petition, every field: text, state, type, legislature, author's name, thresholds, "
                "eligibility, committee and its history, rapporteur, sponsors, rejection, outcomes."
            ),
            description="A draft or a petition waiting for moderation is 404 PETITION_NOT_FOUND here.",
            parameters=(PETITION, IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The petition.", "Petition", cached=True),),
            revalidated=True,
            errors=(404,),
        ),
    ),
    Route(
        "POST",
        "/api/v1/petitions/{petition_id}/signatures",
        PublicApi.sign,
        Operation(
            "signPetition",
            "Signs the petition as the holder of the signer credential.",
            description=(
                "A person who already signed gets outcome OUTCOME_ALREADY_SIGNED (not an error). A retry "
                "with the same idempotency key gets the first answer and records nothing new."
            ),
            sign_in="signer",
            parameters=(
                PETITION,
                Parameter("Idempotency-Key", "header", IDEMPOTENCY_KEY, "Chosen by the client; generated when absent."),
                TIMEOUT,
            ),
            body=Body({"idempotency_key": IDEMPOTENCY_KEY}, body_required=False),
            answers=(Answer(200, "Signed, or had already signed.", "SignResponse"),),
            errors=(401, 403, 404, 413, 415),
        ),
    ),
    Route(
        "GET",
        "/api/v1/petitions/{petition_id}/tally",
        PublicApi.get_tally,
        Operation(
            "getTally",
            "The petition's counts: total, by territory, by country, thresholds reached.",
            description="Cacheable for a short time by browsers and CDNs; served from a coalescing cache.",
            parameters=(PETITION, IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The tally.", "PetitionTally", cached=True),),
            revalidated=True,
            errors=(404,),
        ),
    ),
    Route(
        "GET",
        "/api/v1/petitions/{petition_id}/tally/live",
        PublicApi.live_tally,
        Operation(
            "watchTally",
            "Server-Sent Events: event `tally` (a PetitionTally) now and at each change.",
            description=(
                "Event `paused` (an Error): tally cannot be reached, updates resume by themselves; when the "
                "stream then ends, the browser reconnects. Event `ended` (an Error): the stream is over for good."
            ),
            parameters=(PETITION, TIMEOUT),
            answers=(Answer(200, "An event stream.", {"type": "string"}, content_type="text/event-stream"),),
            errors=(404,),
        ),
        allow_head=False,
    ),
    Route(
        "GET",
        OPEN_DATA % "json",
        PublicApi.open_data,
        Operation(
            "getOpenDataJson",
            "Open data: the counts by territory and by country, as JSON.",
            parameters=(PETITION, IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The counts.", "OpenData", cached=True),),
            revalidated=True,
            errors=(404,),
        ),
    ),
    Route(
        "GET",
        OPEN_DATA % "csv",
        PublicApi.open_data,
        Operation(
            "getOpenDataCsv",
            (
                "Open data as CSV: petition_id, as_of, scope (total, territory, country), code, name (a"
                " territory's), signatures."
            ),
            parameters=(PETITION, IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The counts.", {"type": "string"}, content_type="text/csv", cached=True),),
            revalidated=True,
            errors=(404,),
        ),
    ),
    Route(
        "POST",
        "/api/v1/auth/email/start",
        SignIn.email_start,
        Operation(
            "startEmailVerification",
            "Sends a one-time code to an email address.",
            parameters=(TIMEOUT,),
            body=Body(
                {
                    "email": {"type": "string", "format": "email", "maxLength": 320},
                    # Each may be empty (not declared); a territory is a code of
                    # the reference list, exactly (servicekit.territories).
                    "country": {"type": "string", "pattern": "^(?:[A-Z]{2})?$"},
                    "territory": {"type": "string", "enum": ["", *territories.codes()]},
                },
                ("email",),
            ),
            answers=(Answer(200, "Code sent; pass verification_id to complete.", "BeginEmailVerificationResponse"),),
            errors=(403, 413, 415),
        ),
    ),
    Route(
        "POST",
        "/api/v1/auth/email/complete",
        SignIn.email_complete,
        Operation(
            "completeEmailVerification",
            "Checks the code; the signer credential is set as an HttpOnly cookie.",
            parameters=(TIMEOUT,),
            body=Body(
                {
                    "verification_id": {"type": "string", "maxLength": 64},
                    "code": {"type": "string", "pattern": "^[0-9]{6}$"},
                },
                ("verification_id", "code"),
            ),
            answers=(Answer(200, "Signed in.", "Session"),),
            errors=(401, 403, 404, 413, 415),
        ),
    ),
    Route(
        "GET",
        "/api/v1/session",
        SignIn.session,
        Operation(
            "getSession",
            "Whether this browser is signed in to sign (how, until when) and as an author (under which name).",
            description=(
                "Each credential cookie (the signer's, the author's) is checked against identity's keys first: "
                "one identity did not sign (or expired) is signed_in false, and that cookie is cleared."
            ),
            answers=(Answer(200, "The sign-in.", "Session"),),
        ),
    ),
    Route(
        "DELETE",
        "/api/v1/session",
        SignIn.sign_out,
        Operation(
            "signOut",
            "Forgets this browser's signer and author credentials.",
            answers=(Answer(200, "Signed out.", "Session"),),
            errors=(403, 415),
        ),
    ),
    Route(
        "GET",
        "/auth/oidc/start",
        SignIn.oidc_start,
        Operation(
            "startOidcSignIn",
            "Redirects to the identity provider (authorization code flow with PKCE).",
            parameters=(RETURN_TO,),
            answers=(
                Answer(302, "To the identity provider."),
                Answer(303, "Back to the page with ?signin_error=REASON (provider unreachable)."),
            ),
        ),
        allow_head=False,
    ),
    Route(
        "GET",
        "/auth/oidc/callback",
        SignIn.oidc_callback,
        Operation(
            "finishOidcSignIn",
            "Where the identity provider sends the browser back.",
            parameters=CALLBACK,
            answers=(
                Answer(
                    303,
                    "Back to the page: signed in (the credential is an HttpOnly cookie), or with ?signin_error=REASON.",
                ),
            ),
        ),
        allow_head=False,
    ),
    Route(
        "GET",
        "/auth/author/start",
        SignIn.author_start,
        Operation(
            "startAuthorSignIn",
            "Redirects an author to the identified provider (names and birthdate are read, by identity only).",
            description=(
                "The author credential ends up in its own HttpOnly cookie (petitions_author), apart from the "
                f"signer's. The sign-in state is the {AUTHOR_SIGN_IN_COOKIE} cookie. A minor comes back with "
                "?signin_error=AUTHOR_NOT_ADULT, an anonymous provider with IDENTIFIED_SIGN_IN_REQUIRED."
            ),
            parameters=(
                RETURN_TO,
                Parameter(
                    "display_name",
                    "query",
                    {"type": "string", "enum": list(DISPLAY_NAME_FORMS), "default": "initial"},
                    "How much of the verified name the author agrees to publish: 'initial' (Marie D.) or "
                    "'full' (Marie Dupont).",
                ),
            ),
            answers=(
                Answer(302, "To the identified provider."),
                Answer(303, "Back to the page with ?signin_error=REASON (provider unreachable)."),
            ),
        ),
        allow_head=False,
    ),
    Route(
        "GET",
        "/auth/author/callback",
        SignIn.author_callback,
        Operation(
            "finishAuthorSignIn",
            "Where the identified provider sends an author's browser back.",
            parameters=CALLBACK,
            answers=(
                Answer(
                    303,
                    "Back to the page: signed in as an author (the author credential is an HttpOnly cookie), or "
                    "with ?signin_error=REASON.",
                ),
            ),
        ),
        allow_head=False,
    ),
    Route(
        "GET",
        "/api/v1/petition-types",
        PublicApi.petition_types,
        Operation(
            "listPetitionTypes",
            "The petition types (thresholds, sponsors, duration, eligibility), the current legislature and "
            "the rejection reasons.",
            parameters=(IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The registry.", "ListPetitionTypesResponse", cached=True),),
            revalidated=True,
        ),
    ),
    Route(
        "GET",
        "/api/v1/committees",
        PublicApi.committees,
        Operation(
            "listCommittees",
            "The committees petitions are assigned to.",
            parameters=(IF_NONE_MATCH, TIMEOUT),
            answers=(Answer(200, "The registry.", "ListCommitteesResponse", cached=True),),
            revalidated=True,
        ),
    ),
    Route(
        "POST",
        "/api/v1/drafts",
        PetitionLife.create_draft,
        Operation(
            "createDraft",
            "Starts a petition as a draft, in the author's name (from the author credential).",
            sign_in="author",
            parameters=(TIMEOUT,),
            body=MessageBody(petitions_pb2.CreateDraftRequest, frozenset()),
            answers=(Answer(200, "The draft.", "Petition"),),
            errors=CHANGE_ERRORS,
        ),
    ),
    Route(
        "GET",
        "/api/v1/drafts/{petition_id}",
        PetitionLife.get_draft,
        Operation(
            "getDraft",
            "One of the author's own petitions, in any state.",
            sign_in="author",
            parameters=(PETITION, TIMEOUT),
            answers=(Answer(200, "The petition.", "Petition"),),
            errors=READ_ERRORS,
        ),
    ),
    Route(
        "PATCH",
        "/api/v1/drafts/{petition_id}",
        PetitionLife.update_draft,
        Operation(
            "updateDraft",
            "Edits the author's draft (title, text), optionally only at expected_version.",
            sign_in="author",
            parameters=(PETITION, TIMEOUT),
            body=MessageBody(petitions_pb2.UpdateDraftRequest),
            answers=(Answer(200, "The draft.", "Petition"),),
            errors=CHANGE_ERRORS,
        ),
    ),
    Route(
        "POST",
        "/api/v1/drafts/{petition_id}/submit",
        PetitionLife.submit,
        Operation(
            "submitPetition",
            "Submits the draft: to gathering sponsors when its type needs them, else to moderation.",
            sign_in="author",
            parameters=(PETITION, TIMEOUT),
            body=MessageBody(petitions_pb2.SubmitPetitionRequest),
            answers=(Answer(200, "The petition.", "Petition"),),
            errors=CHANGE_ERRORS,
        ),
    ),
    Route(
        "POST",
        "/api/v1/petitions/{petition_id}/sponsors",
        PetitionLife.sponsor,
        Operation(
            "sponsorPetition",
            "Supports a petition gathering sponsors, as the holder of the signer credential.",
            description=(
                "Each person counts once (counted false the second time); the author does not count. The "
                "sponsor completing the count sends the petition to moderation."
            ),
            sign_in="signer",
            parameters=(PETITION, TIMEOUT),
            body=MessageBody(petitions_pb2.SponsorPetitionRequest, IN_PATH | {"credential"}),
            answers=(Answer(200, "Counted or not, and the petition.", "SponsorPetitionResponse"),),
            errors=CHANGE_ERRORS,
        ),
    ),
    _staff_change(
        "review",
        "reviewPetition",
        "Moderator: opens a submitted petition, or rejects it with a reason code (duplicate_of for a duplicate).",
        petitions_pb2.ReviewPetitionRequest,
    ),
    _staff_change(
        "assign", "assignCommittee", "Clerk: assigns the petition to a committee.", petitions_pb2.AssignCommitteeRequest
    ),
    _staff_change(
        "rapporteur", "nameRapporteur", "Clerk: names the committee's rapporteur.", petitions_pb2.NameRapporteurRequest
    ),
    _staff_change(
        "class",
        "classPetition",
        "Clerk: the committee files the petition (classement); signing closes.",
        petitions_pb2.ClassPetitionRequest,
    ),
    _staff_change(
        "close",
        "closePetition",
        "Clerk or administrator: closes an open petition before its deadline.",
        petitions_pb2.ClosePetitionRequest,
    ),
    _staff_change(
        "outcomes",
        "recordOutcome",
        "Clerk: records a response or a debate (date, text, https links).",
        petitions_pb2.RecordOutcomeRequest,
    ),
    Route(
        "GET",
        "/api/v1/staff/petitions/{petition_id}",
        PetitionLife.staff_petition,
        Operation(
            "getStaffPetition",
            "Staff: one petition in any state.",
            sign_in="staff",
            parameters=(PETITION, TIMEOUT),
            answers=(Answer(200, "The petition.", "Petition"),),
            errors=READ_ERRORS,
        ),
    ),
    Route(
        "GET",
        "/api/v1/staff/petitions/{petition_id}/suggestions",
        PetitionLife.suggestions,
        Operation(
            "suggestCommittee",
            "Staff: the committees the suggester proposes, best first, each with the rules that matched.",
            sign_in="staff",
            parameters=(PETITION, TIMEOUT),
            answers=(Answer(200, "The suggestions.", "SuggestCommitteeResponse"),),
            errors=READ_ERRORS,
        ),
    ),
    Route(
        "GET",
        "/api/v1/staff/petitions/{petition_id}/audit",
        PetitionLife.audit,
        Operation(
            "getAuditTrail",
            "Staff: every change of the petition, oldest first (who, role, what, when, before and after, reason).",
            sign_in="staff",
            parameters=(
                PETITION,
                Parameter(
                    "page_size", "query", {"type": "integer", "minimum": 0, "maximum": MAX_AUDIT_PAGE}, "0: all."
                ),
                PAGE_TOKEN,
                TIMEOUT,
            ),
            answers=(Answer(200, "The audit trail.", "GetAuditTrailResponse"),),
            errors=READ_ERRORS,
        ),
    ),
    Route(
        "GET",
        "/api/v1/staff/queue",
        PetitionLife.queue,
        Operation(
            "listStaffQueue",
            "Staff: petitions in any state, e.g. the admissibility queue (state=submitted) or a committee's.",
            sign_in="staff",
            parameters=(*LISTING, TIMEOUT),
            answers=(Answer(200, "A page of petitions.", "ListPetitionsResponse"),),
            errors=READ_ERRORS,
        ),
    ),
    Route(
        "POST",
        "/api/v1/staff/legislatures/close",
        PetitionLife.close_legislature,
        Operation(
            "closeLegislature",
            "Administrator: closes every open petition of the legislature and archives all of them.",
            sign_in="staff",
            parameters=(TIMEOUT,),
            body=MessageBody(petitions_pb2.CloseLegislatureRequest, frozenset()),
            answers=(Answer(200, "How many were closed and archived.", "CloseLegislatureResponse"),),
            errors=CHANGE_ERRORS,
        ),
    ),
    Route(
        "GET",
        "/healthz",
        Pages.healthz,
        Operation(
            "healthz",
            "The process is alive.",
            answers=(
                Answer(
                    200,
                    "Alive.",
                    {
                        "type": "object",
                        "properties": {"status": {"type": "string"}},
                        "required": ["status"],
                        "additionalProperties": False,
                    },
                ),
            ),
            errors=None,
        ),
    ),
    Route(
        "GET",
        "/readyz",
        Pages.readyz,
        Operation(
            "readyz",
            (
                "The backends signing needs (identity, signing, tally) are reachable and the gateway is not "
                "stopping; the petitions service is reported but not required."
            ),
            answers=(Answer(200, "Ready.", READINESS), Answer(503, "Not ready.", READINESS)),
            errors=None,
        ),
    ),
    # The web page (one for the list and for each petition) and this
    # document: for browsers, not operations of the API.
    Route("GET", "/", Pages.page, None),
    Route("GET", "/petitions/{petition_id}", Pages.page, None),
    Route("GET", "/openapi.json", Pages.openapi, None),
)


def route_defs(*owners: object) -> list[web.AbstractRouteDef]:
    """The router's routes: each table handler bound to the one of owners
    whose class defines it, then the page's static files."""
    definitions: list[web.AbstractRouteDef] = []
    for route in ROUTES:
        name = route.handler.__name__
        bound = [owner for owner in owners if vars(type(owner)).get(name) is route.handler]
        if len(bound) != 1:
            raise LookupError(f"{route.method} {route.path}: no single owner of {route.handler.__qualname__}")
        handler = getattr(bound[0], name)
        if route.method == "GET":
            definitions.append(web.get(route.path, handler, allow_head=route.allow_head))
        else:
            definitions.append(web.route(route.method, route.path, handler))
    definitions.append(web.static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False))
    return definitions
