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

from servicekit import territories
from services.catalogue.model import PETITION_ID_SCHEMA_PATTERN
from services.gateway.api import MAX_IDEMPOTENCY_KEY, MAX_PAGE_SIZE, MAX_PAGE_TOKEN, STATES, PublicApi
from services.gateway.auth import SignIn
from services.gateway.inputs import MAX_CLIENT_TIMEOUT_MS, MIN_CLIENT_TIMEOUT_MS, TIMEOUT_HEADER
from services.gateway.pages import STATIC_DIR, Pages

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
    body: Body | None = None
    # Signed in by the credential cookie or a bearer credential.
    signed_in: bool = False
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

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/v1/petitions",
        PublicApi.list_petitions,
        Operation(
            "listPetitions",
            "Petitions in the catalogue, optionally only those in one state.",
            parameters=(
                Parameter("state", "query", {"type": "string", "enum": list(STATES)}, "Only petitions in this state."),
                Parameter(
                    "page_size", "query", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_SIZE}, "0: the default."
                ),
                Parameter(
                    "page_token", "query", {"type": "string", "maxLength": MAX_PAGE_TOKEN}, "next_page_token of a page."
                ),
                IF_NONE_MATCH,
                TIMEOUT,
            ),
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
            "One petition: text, state, thresholds, eligibility.",
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
            signed_in=True,
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
            "Whether this browser is signed in, how, and until when.",
            description=(
                "The credential cookie is checked against identity's keys first: one identity did not "
                "sign (or expired) is signed_in false, and the cookie is cleared."
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
            "Forgets this browser's signer credential.",
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
            parameters=(
                Parameter(
                    "return_to",
                    "query",
                    {"type": "string"},
                    "A path on this site to come back to; anything else (another site, over 512 characters) "
                    "comes back to /.",
                ),
            ),
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
            parameters=(
                Parameter("code", "query", {"type": "string"}, "The one-time code."),
                Parameter("state", "query", {"type": "string"}, "The state sent at the start."),
                Parameter("error", "query", {"type": "string"}, "The provider's refusal, if any."),
            ),
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
            "Every backend is reachable and the gateway is not stopping.",
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
