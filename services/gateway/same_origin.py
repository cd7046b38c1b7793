"""Requests that change something must come from the gateway's own page
when the browser's cookie is what signs them in.

The credential cookie is SameSite=Strict, but a site is not an origin: a
page on another port of the same host, or on a sibling subdomain in
production, is same-site, so its forms and fetches carry the cookie. And a
form can POST an empty body of any content type, which reads as `{}`. So,
for every request with a method that changes state (POST, PUT, PATCH,
DELETE):

- signed in by a cookie, the signer's or the author's (no Authorization
  header): the browser must say
  the request comes from one of the gateway's own origins (settings
  `public_url` and `public_origins`) in Origin, or, without Origin, with
  `Sec-Fetch-Site: same-origin`. Anything else is 403 CROSS_ORIGIN_REQUEST.
  Browsers set both headers themselves; a page's script cannot forge them.
- not signed in at all: an Origin that is neither the gateway's nor one of
  `cors_origins` is refused the same way (a foreign page starting or
  completing a sign-in would sign the visitor in as someone else).
  Requests without Origin are not from a browser page and pass.
- Bearer clients (API callers, and `cors_origins` pages, which use Bearer
  because cross-origin requests carry no cookies) are not asked for an
  origin: another site cannot make a browser send their token.
- whatever the authentication, a Content-Type that is not JSON is 415
  UNSUPPORTED_MEDIA_TYPE, even over an empty body: no form can send JSON,
  and a foreign page can send no other type without a CORS preflight,
  which the gateway refuses to origins not in `cors_origins`. The one
  exception is an empty body labelled application/octet-stream, which
  HTTP libraries (aiohttp's client among them) put on a POST without a
  body; neither a form nor a preflight-free fetch can send it.
"""

from __future__ import annotations

import grpc
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from services.gateway.auth import SIGNING_IN_COOKIES
from services.gateway.http_errors import ApiError
from services.gateway.settings import GatewaySettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FETCH_SITE = "Sec-Fetch-Site"
NO_BODY_MEDIA_TYPE = "application/octet-stream"


def is_json_media_type(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _acceptable_media_type(request: web.Request) -> bool:
    if is_json_media_type(request.content_type):
        return True
    empty = not request.body_exists or request.content_length == 0
    return empty and request.content_type == NO_BODY_MEDIA_TYPE


def cross_origin(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, "CROSS_ORIGIN_REQUEST", message)


def unsupported_media_type() -> ApiError:
    return ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
        "the body must be JSON (Content-Type: application/json), or no body without a Content-Type",
        http_status=415,
    )


def same_origin_guard(settings: GatewaySettings) -> Middleware:
    own = settings.own_origins
    allowed = own | frozenset(settings.cors_origins)

    @web.middleware
    async def same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in SAFE_METHODS:
            return await handler(request)
        if hdrs.AUTHORIZATION not in request.headers:
            origin = request.headers.get(hdrs.ORIGIN)
            # The signer's cookie or the author's: either signs the request in.
            if any(request.cookies.get(cookie) for cookie in SIGNING_IN_COOKIES):
                if origin is not None:
                    from_own_page = origin in own
                else:
                    from_own_page = request.headers.get(FETCH_SITE) == "same-origin"
                if not from_own_page:
                    raise cross_origin(
                        "a request signed in by cookie must come from this site's own page "
                        "(API clients send Authorization: Bearer instead)"
                    )
            elif origin is not None and origin not in allowed:
                raise cross_origin("this origin may not call the API from a browser")
        if hdrs.CONTENT_TYPE in request.headers and not _acceptable_media_type(request):
            raise unsupported_media_type()
        return await handler(request)

    return same_origin
