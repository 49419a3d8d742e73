"""Server-rendered pages (login, consent, errors): no JavaScript, no framing, escaped output.

Every HTML response of the authorization server is built by ``page`` and carries the headers
in ``PAGE_HEADERS`` (BP-03). Every value shown passes through ``text``, so nothing stored
(a client's name, a redirect URI registered before today's checks) can break the markup or the
response: control characters and lone surrogates are shown as U+FFFD, everything is escaped.
A host name outside ASCII is shown with its IDNA (punycode) form beside it, the name the
browser will actually go to.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import idna
from starlette.responses import HTMLResponse

__all__ = [
    "PAGE_HEADERS",
    "ascii_host",
    "consent_page",
    "error_page",
    "host_html",
    "login_page",
    "page",
    "text",
]

PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the
    # form posts, and the origin is what shows a post came from these pages.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# C0 controls, DEL, C1 controls, lone surrogates; and the bidirectional-text controls, which
# would let a name rearrange the sentence it is shown in.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What may stand in a CSP source's host and port, once the host is in its ASCII form.
_CSP_HOST = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")


def text(value: str) -> str:
    """Any string, made safe to put in HTML text or a quoted attribute."""
    return html.escape(_UNSHOWABLE.sub("\ufffd", value))


def ascii_host(host: str) -> str | None:
    """The IDNA (punycode) form of a host name as browsers compute it (UTS #46, not
    transitional); None when it has none. ASCII hosts are returned as they are."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:  # the older IDNA 2003 rules still give some names (emoji) one
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def host_html(host: str) -> str:
    """A host for the page: as it was given, and beside it the ASCII name it really is."""
    ascii_form = ascii_host(host)
    if ascii_form == host:
        return f"<code>{text(host)}</code>"
    shown = f"<code>{text(ascii_form)}</code>" if ascii_form else "no valid ASCII form"
    return (f"<code>{text(host)}</code> <span class=\"warn-inline\">(international name; "
            f"its real name is {shown})</span>")


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;"
    "color:#1b1b1b}h1{font-size:1.4rem}.warn{background:#fff3cd;border:1px solid #e0b400;"
    "padding:.6rem;border-radius:4px}.err{color:#a00}dt{font-weight:600;margin-top:.6rem}"
    "label{display:block;margin-top:.8rem}input[type=text],input[type=password]{width:100%;"
    "padding:.4rem}button{margin-top:1rem;padding:.5rem 1rem;margin-right:.5rem}"
    ".warn-inline{color:#7a5a00}"
)


def page(title: str, body: str, *, status: int = 200, redirect_uri: str | None = None
         ) -> HTMLResponse:
    """A page with the framing and CSP headers. ``redirect_uri``: where a form on this page
    may end up (browsers apply ``form-action`` to the redirect that follows a post)."""
    document = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{text(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    headers = dict(PAGE_HEADERS)
    target = _origin(redirect_uri) if redirect_uri else None
    if target:
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "form-action 'self'", f"form-action 'self' {target}")
    return HTMLResponse(document, status_code=status, headers=headers)


def _origin(uri: str) -> str | None:
    """scheme://host[:port] of an http(s) redirect URI, for a CSP source; else None.

    Only a host and port that a CSP source can hold go into the header (an international
    host in its ASCII form): anything else in a stored URI would corrupt the response."""
    if _UNSHOWABLE.search(uri) or " " in uri:
        return None  # urlsplit would quietly drop some of these: not the URI it seems
    try:
        p = urlsplit(uri)
        port = p.port
    except ValueError:
        return None
    if p.scheme not in ("http", "https") or not p.hostname:
        return None
    host = ascii_host(p.hostname)
    if host is not None and ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    if host is None or not _CSP_HOST.fullmatch(host):
        return None
    return f"{p.scheme}://{host}" + (f":{port}" if port is not None else "")


def error_page(error: str, description: str, *, status: int = 400) -> HTMLResponse:
    body = (
        "<h1>This request cannot be completed</h1>"
        f"<p class=\"err\"><code>{text(error)}</code>: {text(description)}</p>"
        "<p>You have not been sent back to the application, because it could not be verified "
        "where to send you safely. You can close this page.</p>"
    )
    return page("Authorization error", body, status=status)


def _hidden(request_id: str, csrf: str) -> str:
    return (
        f"<input type=\"hidden\" name=\"request\" value=\"{text(request_id)}\">"
        f"<input type=\"hidden\" name=\"csrf\" value=\"{text(csrf)}\">"
    )


def login_page(
    *, action: str, request_id: str, csrf: str, client_name: str, message: str | None = None,
    status: int = 200, redirect_uri: str | None = None,
) -> HTMLResponse:
    msg = f"<p class=\"err\">{text(message)}</p>" if message else ""
    body = (
        f"<h1>Sign in</h1><p>to continue to <strong>{text(client_name)}</strong></p>{msg}"
        f"<form method=\"post\" action=\"{text(action)}\">{_hidden(request_id, csrf)}"
        "<label>Username <input type=\"text\" name=\"username\" autocomplete=\"username\" "
        "required></label>"
        "<label>Password <input type=\"password\" name=\"password\" "
        "autocomplete=\"current-password\" required></label>"
        "<button type=\"submit\">Sign in</button></form>"
    )
    # With consent already given, the login post goes straight back to the client.
    return page("Sign in", body, status=status, redirect_uri=redirect_uri)


def host_of(uri: str) -> str:
    try:
        return urlsplit(uri).hostname or uri
    except ValueError:
        return uri


def consent_page(
    *,
    action: str,
    request_id: str,
    csrf: str,
    username: str,
    client_name: str,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    resource: str,
    resource_name: str,
    localhost_only: bool,
    unverified: bool,
) -> HTMLResponse:
    warnings = ""
    if unverified:
        warnings += (
            "<p class=\"warn\"><strong>Unverified application.</strong> This application "
            "registered itself; its name was chosen by its author and has not been checked. "
            "Only continue if you started this sign-in yourself.</p>"
        )
    if localhost_only:
        warnings += (
            "<p class=\"warn\"><strong>Local application.</strong> This application only "
            "receives its answer on <code>localhost</code> (this computer). Any program on "
            "this computer could claim this name; continue only if you are running it.</p>"
        )
    scope_items = "".join(f"<li><code>{text(s)}</code></li>" for s in scopes) or (
        "<li>(no specific permissions)</li>"
    )
    identity = (
        f"<dt>Application identifier host</dt><dd>{host_html(host_of(client_id))}</dd>"
        if client_id.startswith("https://")
        else f"<dt>Application ID</dt><dd><code>{text(client_id)}</code></dd>"
    )
    body = (
        f"<h1>Allow {text(client_name)}?</h1>"
        f"<p>Signed in as <strong>{text(username)}</strong>.</p>{warnings}<dl>"
        f"<dt>Application</dt><dd>{text(client_name)}</dd>{identity}"
        f"<dt>You will be sent back to</dt><dd>{host_html(host_of(redirect_uri))}"
        f" ({text(redirect_uri)})</dd>"
        f"<dt>Access to</dt><dd>{text(resource_name)} <code>{text(resource)}</code></dd>"
        f"<dt>Permissions</dt><dd><ul>{scope_items}</ul></dd></dl>"
        f"<form method=\"post\" action=\"{text(action)}\">{_hidden(request_id, csrf)}"
        "<button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>"
        "<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>"
    )
    return page("Allow access", body, redirect_uri=redirect_uri)
