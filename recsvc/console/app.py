"""The operator console: a server-rendered Starlette app (Jinja2 templates, SVG charts).

Pages read the feature store, the bundle root and the servers' metrics endpoints; every
change (create/stop an experiment, promote/roll back a model, retention) is a POST that
needs an admin session and its CSRF token. Work that touches the store or the disk runs in
Starlette's thread pool, off the event loop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from feature_store.base import OnlineStore
from recsvc.console import auth
from recsvc.console.format import register_filters
from recsvc.console.pages import artwork, experiments, insights, live, models
from recsvc.console.pages.logs import LogCache
from recsvc.errors import RecsvcError
from recsvc.experiments.report import TABLE_COLUMNS
from recsvc.pipeline import ServingModel

HERE = Path(__file__).parent
MAX_BODY = 128 * 1024
MAX_FIELD = {"token": auth.MAX_TOKEN_CHARS, "csrf": 100, "yaml": 64 * 1024, "replace": 3,
             "confirm": 200, "keep": 6, "next": 200}  # fmt: skip
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_NEXT = re.compile(r"^/[a-z/]*$")
NAV = (("experiments", "Experiments"), ("models", "Models"), ("artwork", "Artwork"),
       ("live", "Live"), ("insights", "Insights"))  # fmt: skip
REPORT_COLUMNS = [
    *TABLE_COLUMNS[:7],
    ("ctr_ci_low", "ctr ci low", "{:.4f}"),
    ("ctr_ci_high", "ctr ci high", "{:.4f}"),
    *TABLE_COLUMNS[7:13],
    ("conversion_ci_low", "conv ci low", "{:.4f}"),
    ("conversion_ci_high", "conv ci high", "{:.4f}"),
    *TABLE_COLUMNS[13:],
]


@dataclass(frozen=True)
class ConsoleConfig:
    artifacts: Path
    feature_store: str
    admin_tokens: tuple[str, ...]
    read_tokens: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    secure_cookies: bool = False


class FormError(RecsvcError):
    """A form field is missing, too long or malformed."""


class Console:
    """What the routes share: the store, sessions, caches."""

    def __init__(self, config: ConsoleConfig, store: OnlineStore) -> None:
        self.config = config
        self.store = store
        self.sessions = auth.Sessions(config.admin_tokens, config.read_tokens)
        self.logs = LogCache(store)
        self.scraper = live.Scraper(config.servers)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        register_filters(self.templates.env)
        self._model: ServingModel | None = None
        self._model_lock = threading.Lock()

    def model(self) -> ServingModel | None:
        """The current bundle's serving tables (policies, variants), rebuilt when it moves."""
        current = models.current_version(self.config.artifacts)
        if current is None:
            return None
        with self._model_lock:
            if self._model is None or self._model.bundle.path.name != current:
                from recsvc.bundle import load_bundle
                from recsvc.pipeline import build_model

                bundle = load_bundle(self.config.artifacts / current, map_user_arrays=True)
                self._model = build_model(bundle)
            return self._model

    def pinned_versions(self) -> set[str]:
        from recsvc.experiments.manage import stored_experiments

        return {
            v.overrides.model_version
            for e in stored_experiments(self.store).values()
            if e.status == "running"
            for v in e.variants
            if v.overrides.model_version
        }

    def user_regions(self) -> dict[str, str]:
        model = self.model()
        if model is None or "region" not in model.bundle.user_features:
            return {}
        regions = model.bundle.user_features["region"]
        return {str(u): str(r) for u, r in zip(model.bundle.user_ids, regions, strict=True)}


# -- request helpers ------------------------------------------------------------------------------


def _console(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def _session(request: Request) -> auth.Session | None:
    return _console(request).sessions.get(request.cookies.get(auth.COOKIE))


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = _session(request)
    flash = context.pop("flash", None)
    page = template.removesuffix(".html")
    return _console(request).templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf": session.csrf if session else "",
            "nav": NAV,
            "page": page,
            "flash": flash,
            **context,
        },
        status_code=status,
    )


def field(form: FormData, name: str, *, required: bool = True) -> str:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise FormError(f"field '{name}': required")
        return ""
    if not isinstance(value, str):
        raise FormError(f"field '{name}': must be text")
    if len(value) > MAX_FIELD[name]:
        raise FormError(f"field '{name}': longer than {MAX_FIELD[name]} characters")
    return value


async def read_form(request: Request) -> FormData:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_BODY:
        raise FormError(f"form body missing or larger than {MAX_BODY} bytes")
    form = await request.form(max_files=0, max_fields=len(MAX_FIELD), max_part_size=MAX_BODY)
    unknown = set(form) - set(MAX_FIELD)
    if unknown:
        raise FormError(f"field '{sorted(unknown)[0]}': not expected")
    return form


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """GET pages: any logged-in session."""

    async def wrapped(request: Request) -> Response:
        session = _session(request)
        if session is None or not session.logged_in:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        try:
            return await handler(request)
        except RecsvcError as exc:
            return render(request, "error.html", status=400, message=str(exc))

    return wrapped


def action(handler: Callable[[Request, FormData], Awaitable[Response]]) -> Handler:
    """POST changes: an admin session, its CSRF token, a bounded form."""

    async def wrapped(request: Request) -> Response:
        session = _session(request)
        if session is None or not session.logged_in:
            return render(request, "error.html", status=403, message="log in first")
        try:
            form = await read_form(request)
            given = field(form, "csrf")
        except FormError as exc:
            return render(request, "error.html", status=400, message=str(exc))
        if not auth.csrf_ok(session, given):
            return render(request, "error.html", status=403, message="bad or missing CSRF token")
        if not session.is_admin:
            return render(
                request, "error.html", status=403,
                message="read-only token: changes need an admin token",
            )  # fmt: skip
        try:
            return await handler(request, form)
        except RecsvcError as exc:
            return render(request, "error.html", status=400, message=str(exc))

    return wrapped


def _name(request: Request, key: str) -> str:
    value = str(request.path_params[key])
    if not _SAFE_NAME.match(value):
        raise FormError(f"{key} {value[:50]!r}: not a valid name")
    return value


def _flash(request: Request, message: str) -> None:
    session = _session(request)
    if session is not None:
        session.flash = message


def _take_flash(request: Request) -> str:
    session = _session(request)
    if session is None:
        return ""
    message, session.flash = session.flash, ""
    return message


# -- login ------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    console = _console(request)
    session = _session(request) or console.sessions.new("anonymous")
    nxt = request.query_params.get("next", "/experiments")
    response = render_with(request, session, "login.html", next=nxt if _NEXT.match(nxt) else "/")
    _set_cookie(console, response, session)
    return response


def render_with(
    request: Request, session: auth.Session, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    return _console(request).templates.TemplateResponse(
        request,
        template,
        {"session": session, "csrf": session.csrf, "nav": NAV, "page": "login", "flash": None,
         **context},
        status_code=status,
    )  # fmt: skip


def _set_cookie(console: Console, response: Response, session: auth.Session) -> None:
    response.set_cookie(
        auth.COOKIE,
        session.sid,
        max_age=auth.SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=console.config.secure_cookies,
        path="/",
    )


async def login(request: Request) -> Response:
    console = _console(request)
    session = _session(request)
    try:
        form = await read_form(request)
        given, token = field(form, "csrf"), field(form, "token")
        nxt = field(form, "next", required=False) or "/experiments"
    except FormError as exc:
        return render(request, "error.html", status=400, message=str(exc))
    if session is None or not auth.csrf_ok(session, given):
        return render(request, "error.html", status=403, message="bad or missing CSRF token")
    role = console.sessions.role_of(token)
    if role is None:
        return render_with(request, session, "login.html", status=403,
                           next=nxt, error="unknown token")  # fmt: skip
    console.sessions.drop(session.sid)  # a new id after login (no session fixation)
    fresh = console.sessions.new(role)
    response = RedirectResponse(nxt if _NEXT.match(nxt) else "/", status_code=303)
    _set_cookie(console, response, fresh)
    return response


async def logout_any(request: Request) -> Response:
    """Logout for read-only sessions too (``action`` requires admin)."""
    session = _session(request)
    try:
        form = await read_form(request)
        given = field(form, "csrf")
    except FormError as exc:
        return render(request, "error.html", status=400, message=str(exc))
    if session is None or not auth.csrf_ok(session, given):
        return render(request, "error.html", status=403, message="bad or missing CSRF token")
    _console(request).sessions.drop(session.sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response


# -- experiments ------------------------------------------------------------------------------


@page
async def experiments_page(request: Request) -> Response:
    console = _console(request)
    data = await run_in_threadpool(experiments.listing, console.store)
    return render(request, "experiments.html", flash=_take_flash(request), yaml="", **data)


@action
async def experiment_create(request: Request, form: FormData) -> Response:
    console = _console(request)
    text = field(form, "yaml")
    replace = field(form, "replace", required=False) == "on"
    try:
        placed = await run_in_threadpool(
            experiments.create, console.store, text, console.config.artifacts, replace=replace
        )
    except RecsvcError as exc:
        data = await run_in_threadpool(experiments.listing, console.store)
        return render(request, "experiments.html", status=400, error=str(exc), yaml=text, **data)
    _flash(request, f"created experiment {placed.name!r}")
    return RedirectResponse(f"/experiments/{placed.name}", status_code=303)


@page
async def experiment_page(request: Request) -> Response:
    console = _console(request)
    name = _name(request, "name")
    data = await run_in_threadpool(experiments.report, console.store, name)
    return render(request, "experiment.html", flash=_take_flash(request),
                  columns=REPORT_COLUMNS, **data)  # fmt: skip


@page
async def experiment_stop_confirm(request: Request) -> Response:
    name = _name(request, "name")
    return render(request, "confirm.html", title=f"Stop experiment {name}?",
                  action=f"/experiments/{name}/stop", confirm=name,
                  detail="Users in it get the server defaults from now on.")  # fmt: skip


@action
async def experiment_stop(request: Request, form: FormData) -> Response:
    name = _name(request, "name")
    if field(form, "confirm") != name:
        raise FormError("field 'confirm': does not name this experiment")
    stopped, was_running = await run_in_threadpool(experiments.stop, _console(request).store, name)
    _flash(
        request, f"stopped experiment {name!r}" if was_running else f"{name!r} was already stopped"
    )
    return RedirectResponse(f"/experiments/{stopped.name}", status_code=303)


# -- models -----------------------------------------------------------------------------------


def _models_data(console: Console) -> dict[str, Any]:
    served = console.scraper.versions()
    data = models.versions(console.config.artifacts, served, console.pinned_versions())
    data["servers"] = [(s, served.get(s, "")) for s in console.config.servers]
    return data


@page
async def models_page(request: Request) -> Response:
    console = _console(request)
    data = await run_in_threadpool(_models_data, console)
    return render(request, "models.html", flash=_take_flash(request), **data)


@page
async def model_promote_confirm(request: Request) -> Response:
    console = _console(request)
    version = _name(request, "version")
    current = models.current_version(console.config.artifacts)
    return render(request, "confirm.html", title=f"Make {version} current?",
                  action=f"/models/{version}/promote", confirm=version,
                  detail=f"current is {current}; servers watching the root swap to {version} "
                         "after it passes validation.")  # fmt: skip


@action
async def model_promote(request: Request, form: FormData) -> Response:
    console = _console(request)
    version = _name(request, "version")
    if field(form, "confirm") != version:
        raise FormError("field 'confirm': does not name this version")
    before = await run_in_threadpool(models.make_current, console.config.artifacts, version)
    _flash(request, f"current: {before} -> {version}")
    return RedirectResponse("/models", status_code=303)


@action
async def model_retention(request: Request, form: FormData) -> Response:
    console = _console(request)
    keep_text = field(form, "keep")
    if not keep_text.isdigit():
        raise FormError("field 'keep': a whole number")
    keep = int(keep_text)
    root = console.config.artifacts
    doomed = await run_in_threadpool(models.retention_plan, root, keep, console.pinned_versions())
    if field(form, "confirm", required=False) != "delete":
        return render(request, "confirm.html", title=f"Delete {len(doomed)} old version(s)?",
                      action="/models/retention", confirm="delete", keep=keep_text,
                      detail=", ".join(doomed) or "nothing to delete")  # fmt: skip
    deleted = await run_in_threadpool(models.delete_versions, root, doomed)
    _flash(request, f"deleted {len(deleted)} version(s): {', '.join(deleted) or '-'}")
    return RedirectResponse("/models", status_code=303)


# -- artwork, live, insights ------------------------------------------------------------------


def _artwork_data(console: Console, item: str, policy: str) -> dict[str, Any]:
    rounds = console.logs.rounds()
    return artwork.page(console.store, rounds, console.model(), item, policy)


@page
async def artwork_page(request: Request) -> Response:
    item = request.query_params.get("item", "")
    policy = request.query_params.get("policy", "")
    if (item and not _SAFE_NAME.match(item)) or len(item) > 256:
        raise FormError("item: not a valid item id")
    if policy and policy not in artwork.RECSVC_POLICIES:
        raise FormError(f"policy {policy[:50]!r}: unknown")
    data = await run_in_threadpool(_artwork_data, _console(request), item, policy)
    return render(request, "artwork.html", **data)


@page
async def live_page(request: Request) -> Response:
    console = _console(request)
    servers = await run_in_threadpool(console.scraper.snapshot)
    return render(request, "live.html", servers=servers)


def _insights_data(console: Console, window: str) -> dict[str, Any]:
    span = insights.WINDOWS[window]
    import time

    since = int(time.time() * 1000) - 2 * span
    events, request_regions = console.logs.events()
    recent = events[events["timestamp_ms"] >= since]
    located = insights.with_regions(recent, request_regions, console.user_regions())
    return {
        "trend": insights.trending(located, window),
        "funnel": insights.funnel(insights.with_regions(events, request_regions,
                                                        console.user_regions())),
    }  # fmt: skip


@page
async def insights_page(request: Request) -> Response:
    window = request.query_params.get("window", "day")
    if window not in insights.WINDOWS:
        raise FormError(f"window {window[:20]!r}: day or week")
    data = await run_in_threadpool(_insights_data, _console(request), window)
    return render(request, "insights.html", window=window, windows=list(insights.WINDOWS), **data)


async def home(request: Request) -> Response:
    return RedirectResponse("/experiments", status_code=303)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response


def create_app(config: ConsoleConfig, store: OnlineStore | None = None) -> Starlette:
    """The ASGI app; opens ``config.feature_store`` unless a store is given."""
    if store is None:
        from feature_store.factory import open_store

        store = open_store(config.feature_store)
    routes = [
        Route("/", home),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout_any, methods=["POST"]),
        Route("/experiments", experiments_page, methods=["GET"]),
        Route("/experiments", experiment_create, methods=["POST"]),
        Route("/experiments/{name}", experiment_page, methods=["GET"]),
        Route("/experiments/{name}/stop", experiment_stop_confirm, methods=["GET"]),
        Route("/experiments/{name}/stop", experiment_stop, methods=["POST"]),
        Route("/models", models_page, methods=["GET"]),
        Route("/models/retention", model_retention, methods=["POST"]),
        Route("/models/{version}/promote", model_promote_confirm, methods=["GET"]),
        Route("/models/{version}/promote", model_promote, methods=["POST"]),
        Route("/artwork", artwork_page),
        Route("/live", live_page),
        Route("/insights", insights_page),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)])
    app.state.console = Console(config, store)
    return app
