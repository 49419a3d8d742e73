"""The authorization endpoint and the login and consent pages behind it.

Flow: ``GET /authorize`` checks the request (errors before the redirect URI is trusted become a
page; later ones go back to the client with ``iss``), stores it as a *pending authorization*
with its own CSRF token, bound to this browser by the ``__Host-bastion-browser`` cookie, and
sends the browser to ``/login`` or ``/consent``. Approval consumes the pending request exactly
once and redirects with ``code``, ``state`` and ``iss``. Pages may be reloaded at will: a GET
never changes the pending request or its CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.errors import OAuthError, TemporarilyUnavailable
from bastion.oauth.rfc7591 import is_loopback_host
from bastion.oauth.rfc8414 import issuer_path
from bastion.oauth.rfc9207 import authorization_redirect
from bastion.passwords import verify_password, verify_unknown_user
from bastion.server import pages
from bastion.server.audit_events import record
from bastion.server.checks import AUTHORIZE_CHECKS, AuthorizeRequest, run_checks
from bastion.server.context import (
    PENDING_LIFETIME_SECONDS,
    SESSION_LIFETIME_SECONDS,
    AuthorizationServer,
    new_secret,
)
from bastion.server.tokens import new_token_id
from bastion.storage.base import (
    AuthorizationCode,
    ClientRecord,
    Consent,
    PendingAuthorization,
    Session,
    StoreError,
    UserRecord,
    hash_secret,
)

__all__ = [
    "BROWSER_COOKIE",
    "SESSION_COOKIE",
    "authorize",
    "consent_get",
    "consent_post",
    "login_get",
    "login_post",
]

BROWSER_COOKIE = "__Host-bastion-browser"
SESSION_COOKIE = "__Host-bastion-session"
MAX_FORM_FIELD = 4096


def single_params(items: QueryParams | FormData) -> tuple[dict[str, str], frozenset[str]]:
    """Parameters as a dict, and the names sent more than once (RFC 6749 §3.1)."""
    out: dict[str, str] = {}
    repeated: set[str] = set()
    for key, value in items.multi_items():
        if not isinstance(value, str):
            continue
        if key in out:
            repeated.add(key)
        out[key] = value
    return out, frozenset(repeated)


def _set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    # __Host- prefix: Secure, Path=/, no Domain (BP-04).
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax"
    )


def _path(server: AuthorizationServer, name: str) -> str:
    return issuer_path(server.issuer) + "/" + name


def _host(uri: str) -> str | None:
    try:
        return urlsplit(uri).hostname
    except ValueError:  # a stored URI that no longer parses is simply not loopback
        return None


def _localhost_only(client: ClientRecord) -> bool:
    hosts = [_host(u) for u in client.redirect_uris]
    return bool(hosts) and all(is_loopback_host(h) for h in hosts)


def _redirect(url: str, status: int = 303) -> RedirectResponse:
    return RedirectResponse(url, status_code=status, headers={"Cache-Control": "no-store"})


def _unavailable() -> Response:
    return pages.error_page(
        "temporarily_unavailable", "the authorization server cannot reach its storage",
        status=503,
    )


# --- GET /authorize -------------------------------------------------------------------------


async def authorize(server: AuthorizationServer, request: Request) -> Response:
    params, repeated = single_params(request.query_params)
    req = AuthorizeRequest(params=params, repeated=repeated)
    try:
        await run_checks(server, req, AUTHORIZE_CHECKS["authorize/before-redirect"])
    except OAuthError as exc:
        return pages.error_page(exc.error, exc.description)
    except StoreError:
        return _unavailable()
    try:
        await run_checks(server, req, AUTHORIZE_CHECKS["authorize"])
    except OAuthError as exc:
        return _redirect(
            authorization_redirect(
                req.redirect_uri,
                {"error": exc.error, "error_description": exc.description, "state": req.state},
                issuer=server.issuer,
            ),
            302,
        )
    assert req.client is not None
    try:
        return await _start_pending(server, request, req, req.client)
    except StoreError:
        return _unavailable()


async def _start_pending(
    server: AuthorizationServer, request: Request, req: AuthorizeRequest, client: ClientRecord
) -> Response:
    now = server.clock.now()
    browser = request.cookies.get(BROWSER_COOKIE)
    new_browser = not browser or len(browser) > 128
    if new_browser:
        browser = new_secret()
    assert browser is not None
    request_id = new_secret()
    pending = PendingAuthorization(
        request_hash=hash_secret(request_id),
        csrf_token=new_secret(),
        browser_hash=hash_secret(browser),
        client_id=client.client_id,
        redirect_uri=req.redirect_uri,
        state=req.state,
        code_challenge=req.code_challenge,
        resource=req.resource,
        scopes=req.scopes,
        created_at=now,
        expires_at=now + PENDING_LIFETIME_SECONDS,
    )
    await server.store.save_pending(pending)
    session = await _session(server, request)
    response: Response
    if session is not None and await _consent_covers(server, session.subject, pending):
        response = await _finish(server, pending, session.subject, request_id)
    else:
        page = "consent" if session is not None else "login"
        response = _redirect(_path(server, page) + "?" + urlencode({"request": request_id}))
    if new_browser:
        _set_cookie(response, BROWSER_COOKIE, browser, None)
    return response


async def _session(server: AuthorizationServer, request: Request) -> Session | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 128:
        return None
    return await server.store.get_session(hash_secret(raw), server.clock.now())


async def _consent_covers(
    server: AuthorizationServer, subject: str, pending: PendingAuthorization
) -> bool:
    consent = await server.store.get_consent(subject, pending.client_id, pending.resource)
    return consent is not None and set(pending.scopes) <= set(consent.scopes)


async def _finish(
    server: AuthorizationServer, pending: PendingAuthorization, subject: str, request_id: str
) -> Response:
    """Consume the pending request (once) and send the browser back with a code."""
    if not await server.store.consume_pending(hash_secret(request_id)):
        return pages.error_page("invalid_request", "this authorization was already completed")
    client = await server.clients.get(pending.client_id)
    now = server.clock.now()
    code = new_secret()
    await server.store.save_code(
        AuthorizationCode(
            code_hash=hash_secret(code),
            client_id=pending.client_id,
            redirect_uri=pending.redirect_uri,
            code_challenge=pending.code_challenge,
            resource=pending.resource,
            scopes=pending.scopes,
            subject=subject,
            created_at=now,
            expires_at=now + server.config.authorization_server.authorization_code_lifetime_seconds,
            family_id=new_secret(),
            access_jti=new_token_id(),
            issue_refresh="refresh_token" in client.grant_types,
        )
    )
    return _redirect(
        authorization_redirect(
            pending.redirect_uri, {"code": code, "state": pending.state}, issuer=server.issuer
        )
    )


# --- pending request lookup shared by the pages ---------------------------------------------


async def _pending_for(
    server: AuthorizationServer, request: Request, request_id: str | None
) -> PendingAuthorization | Response:
    if not request_id or len(request_id) > 128:
        return pages.error_page("invalid_request", "no authorization request is in progress")
    pending = await server.store.get_pending(hash_secret(request_id), server.clock.now())
    if pending is None:
        return pages.error_page(
            "invalid_request", "this authorization request has expired or was already completed"
        )
    browser = request.cookies.get(BROWSER_COOKIE) or ""
    if not hmac.compare_digest(hash_secret(browser), pending.browser_hash):
        return pages.error_page(
            "invalid_request", "this authorization request was started in another browser",
            status=403,
        )
    return pending


def _csrf_ok(form: Mapping[str, str], pending: PendingAuthorization) -> bool:
    token = form.get("csrf", "")
    return bool(token) and hmac.compare_digest(token, pending.csrf_token)


async def _posted(
    server: AuthorizationServer, request: Request, form: Mapping[str, str]
) -> tuple[str, PendingAuthorization] | Response:
    """What every form post starts with: its pending request, and a CSRF token that matches."""
    request_id = form.get("request")
    found = await _pending_for(server, request, request_id)
    if isinstance(found, Response):
        return found
    if not _csrf_ok(form, found):
        return _csrf_failure()
    assert request_id is not None
    return request_id, found


def _csrf_failure() -> Response:
    return pages.error_page(
        "invalid_request", "the form's CSRF token is missing or stale; start again", status=403
    )


async def _form(request: Request) -> tuple[dict[str, str], frozenset[str]]:
    async with request.form(max_files=0, max_fields=16, max_part_size=MAX_FORM_FIELD) as form:
        return single_params(form)


# --- /login ---------------------------------------------------------------------------------


async def login_get(server: AuthorizationServer, request: Request) -> Response:
    request_id = request.query_params.get("request")
    try:
        found = await _pending_for(server, request, request_id)
        if isinstance(found, Response):
            return found
        client = await server.clients.get(found.client_id)
    except StoreError:
        return _unavailable()
    except OAuthError as exc:
        return pages.error_page(exc.error, exc.description)
    assert request_id is not None
    return pages.login_page(
        action=_path(server, "login"), request_id=request_id, csrf=found.csrf_token,
        client_name=client.client_name or client.client_id, redirect_uri=found.redirect_uri,
    )


async def login_post(server: AuthorizationServer, request: Request) -> Response:
    form, _ = await _form(request)
    try:
        posted = await _posted(server, request, form)
        if isinstance(posted, Response):
            return posted
        request_id, found = posted
        client = await server.clients.get(found.client_id)
        username = form.get("username", "")
        password = form.get("password", "")
        user = await server.store.get_user(username) if username else None
        ok = (
            verify_password(user.password_hash, password) if user is not None
            else verify_unknown_user(password)
        )
        address = request.client.host if request.client else None
        if user is None or not ok:
            await _record_failed_login(server, username, user, found.client_id, address)
            return pages.login_page(
                action=_path(server, "login"), request_id=request_id, csrf=found.csrf_token,
                client_name=client.client_name or client.client_id,
                message="Wrong username or password.", status=401,
                redirect_uri=found.redirect_uri,
            )
        try:
            await record(server, "login.succeeded", subject=user.subject,
                         client_id=found.client_id, username=user.username, address=address)
        except TemporarilyUnavailable:
            return pages.error_page("temporarily_unavailable",
                                    "the audit trail is unavailable; try again", status=503)
        now = server.clock.now()
        session_id = new_secret()
        await server.store.create_session(
            Session(hash_secret(session_id), user.subject, user.username, now,
                    now + SESSION_LIFETIME_SECONDS)
        )
        response: Response
        if await _consent_covers(server, user.subject, found):
            response = await _finish(server, found, user.subject, request_id)
        else:
            response = _redirect(
                _path(server, "consent") + "?" + urlencode({"request": request_id})
            )
    except StoreError:
        return _unavailable()
    except OAuthError as exc:
        return pages.error_page(exc.error, exc.description)
    _set_cookie(response, SESSION_COOKIE, session_id, int(SESSION_LIFETIME_SECONDS))
    return response


async def _record_failed_login(server: AuthorizationServer, typed: str, user: UserRecord | None,
                               client_id: str, address: str | None) -> None:
    """The name typed is recorded only when it is an account's; anything else may be a
    password typed into the wrong field, so only a keyed digest of it is kept, which tells
    repeated attempts with one name apart without revealing it."""
    if user is not None:
        who: dict[str, str] = {"username": user.username, "reason": "wrong_password"}
        subject: str | None = user.subject
    else:
        digest = hmac.new(server.login_digest_key, typed.encode("utf-8", "replace"),
                          hashlib.sha256).hexdigest()[:32]
        who = {"username_digest": digest, "reason": "unknown_user"}
        subject = None
    await record(server, "login.failed", subject=subject, client_id=client_id,
                 required=False, address=address, **who)


# --- /consent -------------------------------------------------------------------------------


async def consent_get(server: AuthorizationServer, request: Request) -> Response:
    request_id = request.query_params.get("request")
    try:
        found = await _pending_for(server, request, request_id)
        if isinstance(found, Response):
            return found
        assert request_id is not None
        session = await _session(server, request)
        if session is None:
            return _redirect(_path(server, "login") + "?" + urlencode({"request": request_id}))
        client = await server.clients.get(found.client_id)
    except StoreError:
        return _unavailable()
    except OAuthError as exc:
        return pages.error_page(exc.error, exc.description)
    info = server.resources.get(found.resource)
    return pages.consent_page(
        action=_path(server, "consent"),
        request_id=request_id,
        csrf=found.csrf_token,
        username=session.username,
        client_name=client.client_name or client.client_id,
        client_id=client.client_id,
        redirect_uri=found.redirect_uri,
        scopes=found.scopes,
        resource=found.resource,
        resource_name=info.name if info else found.resource,
        localhost_only=_localhost_only(client),
        unverified=not client.verified,
    )


async def consent_post(server: AuthorizationServer, request: Request) -> Response:
    form, _ = await _form(request)
    try:
        posted = await _posted(server, request, form)
        if isinstance(posted, Response):
            return posted
        request_id, found = posted
        session = await _session(server, request)
        if session is None:
            return pages.error_page("access_denied", "you are not signed in", status=403)
        decision = form.get("decision")
        if decision == "approve":
            existing = await server.store.get_consent(
                session.subject, found.client_id, found.resource
            )
            scopes = set(found.scopes) | set(existing.scopes if existing else ())
            try:
                await record(server, "consent.granted", subject=session.subject,
                             client_id=found.client_id, resource=found.resource,
                             scopes=sorted(scopes))
            except TemporarilyUnavailable:
                return pages.error_page("temporarily_unavailable",
                                        "the audit trail is unavailable; try again",
                                        status=503)
            await server.store.grant_consent(
                Consent(session.subject, found.client_id, found.resource, tuple(sorted(scopes)),
                        server.clock.now())
            )
            return await _finish(server, found, session.subject, request_id)
        if decision == "deny":
            if not await server.store.consume_pending(hash_secret(request_id)):
                return pages.error_page(
                    "invalid_request", "this authorization was already completed"
                )
            await record(server, "consent.denied", subject=session.subject,
                         client_id=found.client_id, required=False, resource=found.resource,
                         scopes=list(found.scopes))
            return _redirect(
                authorization_redirect(
                    found.redirect_uri,
                    {"error": "access_denied", "error_description": "the user denied access",
                     "state": found.state},
                    issuer=server.issuer,
                )
            )
        return pages.error_page("invalid_request", "no decision was given")
    except StoreError:
        return _unavailable()
    except OAuthError as exc:
        return pages.error_page(exc.error, exc.description)
