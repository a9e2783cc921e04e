"""The dashboard's HTTP routes: read-only pages under /dashboard, plus log-in and log-out.

Every page is a GET that changes nothing (the store's own re-check of a listed row's fingerprint
aside); the only POSTs are /dashboard/login and /dashboard/logout. A page needs a session cookie
(see sessions.py) or an X-Api-Key / Bearer header (for scripts); without either a browser is sent
to the log-in form. All reads use the caller's own account, so another account's jobs never
appear: their ids answer the same 404 a missing job gets.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fwemu.emulator.auth import api_key_of
from fwemu.emulator.dashboard.sessions import (
    COOKIE, COOKIE_PATH, EXTENSION_KEY, SESSION_TTL_S, SessionTable, account_for_key,
)
from fwemu.emulator.errors import ApiError
from fwemu.emulator.lazy_routes import LazyAPIRoute
from fwemu.emulator.services import Services, get_services


def _lazy():
    """views and queries (HTML builders, charts) load on the first page, not at `fwemu serve` start-up."""
    from fwemu.emulator.dashboard import queries, views

    return queries, views

router = APIRouter(tags=["dashboard"], route_class=LazyAPIRoute, include_in_schema=False)
PREFIX = "/dashboard"  # == views.PREFIX; views and queries load on the first page, not at start-up
MAX_LOGIN_BODY = 4096

# No script, font, frame or remote anything: the stylesheet is same-origin, the charts inline SVG.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chromium posts forms with `Origin: null`, which
    # same_origin() must refuse; no link leads off the host anyway
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def sessions_of(services: Services) -> SessionTable:
    table = services.extensions.get(EXTENSION_KEY)
    if table is None:
        table = services.extensions.setdefault(EXTENSION_KEY, SessionTable())
    return table


def viewer(request: Request, services: Services = Depends(get_services)) -> str | None:
    """The caller's account: from an API key header when one is sent (scripts), else from the session
    cookie; None when neither is valid."""
    keys = services.settings.api_keys
    if key := api_key_of(request):
        return account_for_key(key, keys)
    return sessions_of(services).account(request.cookies.get(COOKIE), keys)


def page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def to_login() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/login", status_code=303, headers=SECURITY_HEADERS)


def same_origin(request: Request) -> bool:
    """A POST from a page of this server: Origin (when the browser sends it) names this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser form post from another site (browsers send Origin on POST)
    return urlsplit(origin).netloc == request.headers.get("host", "")


@router.get("/")
def root():
    return RedirectResponse(PREFIX, status_code=307)


@router.get(f"{PREFIX}/static/dashboard.css")
def stylesheet():
    views = _lazy()[1]
    return Response(views.CSS, media_type="text/css", headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


@router.get(f"{PREFIX}/static/favicon.svg")
def favicon():
    views = _lazy()[1]
    return Response(views.FAVICON, media_type="image/svg+xml",
                    headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


@router.get(f"{PREFIX}/login")
def login_form(account: str | None = Depends(viewer)):
    views = _lazy()[1]
    if account:
        return RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
    return page(views.login_page())


@router.post(f"{PREFIX}/login")
async def login(request: Request, services: Services = Depends(get_services)):
    views = _lazy()[1]
    if not same_origin(request):
        return page(views.error_page(403, "log-in refused: the form was posted from another site"), 403)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return page(views.login_page("the log-in form is too large"), 413)
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    key = (fields.get("api_key") or [""])[0].strip()
    account = account_for_key(key, services.settings.api_keys) if key else None
    if account is None:
        return page(views.login_page("That API key is not valid."), 401)
    sid = sessions_of(services).open(account, key)
    response = RedirectResponse(PREFIX, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL_S), path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.post(f"{PREFIX}/logout")
def logout(request: Request, services: Services = Depends(get_services)):
    views = _lazy()[1]
    if not same_origin(request):
        return page(views.error_page(403, "log-out refused: the form was posted from another site"), 403)
    sessions_of(services).end(request.cookies.get(COOKIE))
    response = to_login()
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.get(PREFIX)
def index(account: str | None = Depends(viewer), services: Services = Depends(get_services)):
    queries, views = _lazy()
    if account is None:
        return to_login()
    jobs, models, deployments, live = queries.index(services, account)
    return page(views.index_page(account, jobs, models, deployments, queries.REFRESH_S if live else None))


@router.get(f"{PREFIX}/jobs/{{job_id}}")
def job_page(job_id: str, pageToken: str = Query("", max_length=512), pageSize: int = Query(50, ge=1, le=200),
             account: str | None = Depends(viewer), services: Services = Depends(get_services)):
    queries, views = _lazy()
    if account is None:
        return to_login()
    try:
        job, rows, token, rejected, charts, live = queries.job(services, account, job_id, pageSize, pageToken or None)
    except ApiError as exc:
        return page(views.error_page(exc.http_status, exc.message, account), exc.http_status)
    except ValueError as exc:  # a page token this store did not issue
        return page(views.error_page(400, str(exc), account), 400)
    html = views.job_page(account, job, rows, page_token=pageToken, next_token=token, page_size=pageSize,
                          rejected=rejected, charts=charts, refresh_s=queries.REFRESH_S if live else None)
    return page(html)


@router.get(f"{PREFIX}/jobs/{{job_id}}/checkpoints/{{name}}")
def explain_page(job_id: str, name: str, account: str | None = Depends(viewer),
                 services: Services = Depends(get_services)):
    queries, views = _lazy()
    if account is None:
        return to_login()
    try:
        x = queries.explain(services, account, job_id, name)
    except ApiError as exc:
        return page(views.error_page(exc.http_status, exc.message, account), exc.http_status)
    return page(views.explain_page(account, x))
