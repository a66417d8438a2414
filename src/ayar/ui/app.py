"""The `ayar ui` web app: FastAPI routes over the run folders, the playground and the new-run jobs."""

from __future__ import annotations

import contextlib
import hmac
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ayar.console import say
from ayar.errors import UsageError
from ayar.serve.middleware import key_matches
from ayar.ui import forms, pages
from ayar.ui import runs as R
from ayar.ui import sweeps as S
from ayar.ui.i18n import COOKIE, pick_language
from ayar.ui.jobs import Jobs
from ayar.ui.playground import Playground

STATIC = Path(__file__).parent / "static"
KEY_COOKIE = "ayar_key"
RUN_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
OPEN_PATHS = ("/login", "/static/")
FILES = {"report.html", "report.md", "loss_curve.png"}  # run files the UI serves as they are


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _host_name(host: str) -> str:
    """A Host header without its port: ``127.0.0.1:7860`` -> ``127.0.0.1``, ``[::1]:7860`` -> ``[::1]``."""
    if host.startswith("[") and "]" in host:
        return host[: host.index("]") + 1]
    return host.split(":", 1)[0]


class UiGate:
    """Requests from other web pages and other host names are refused, then the API key is checked when
    keys are set (Bearer header as `ayar serve`, or the cookie /login sets); the playground's /play/...
    paths then go to `ayar serve`'s own app for that run.

    The UI starts processes, so a page on another site must not be able to drive it through the user's
    browser: a state-changing request whose Origin is not this server's is refused (403), and so is one
    that is not JSON (a cross-site form or text/plain POST needs no CORS preflight). With
    ``allowed_hosts``, a Host header naming anything else is refused too (DNS rebinding).
    """

    def __init__(self, app: ASGIApp, keys: list[str], playground: Playground,
                 allowed_hosts: frozenset[str] | None = None) -> None:
        self.app, self.keys, self.playground, self.allowed_hosts = app, keys, playground, allowed_hosts

    def _refusal(self, scope: Scope) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return f"host '{host}' is not this UI's address"
        if scope["method"] in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return f"requests from {origin} are refused"
        if scope["path"] != "/login" and not headers.get("content-type", "").startswith("application/json"):
            return "send JSON (Content-Type: application/json)"
        return None

    def _allowed(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if key_matches(headers.get("authorization"), self.keys):
            return True
        cookies = dict(part.strip().split("=", 1) for part in headers.get("cookie", "").split(";") if "=" in part)
        given = cookies.get(KEY_COOKIE, "")
        return any(hmac.compare_digest(given.encode(), key.encode()) for key in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await JSONResponse({"error": refusal}, 403)(scope, receive, send)
            return
        if scope["type"] == "http" and self.keys and not scope["path"].startswith(OPEN_PATHS) \
                and not self._allowed(scope):
            response: Response = (RedirectResponse("/login", 303) if scope["method"] == "GET"
                                  and not scope["path"].startswith(("/api/", "/play/"))
                                  else JSONResponse({"error": "missing or invalid API key"}, 401))
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["path"].startswith("/play/"):
            await self.playground.dispatch(scope, receive, send, self.app)
            return
        await self.app(scope, receive, send)


def _lang(request: Request) -> str:
    return pick_language(request.query_params.get("lang"), request.cookies.get(COOKIE),
                         request.headers.get("accept-language"))


def _page(request: Request, html: str, status: int = 200) -> HTMLResponse:
    response = HTMLResponse(html, status)
    chosen = request.query_params.get("lang")
    if chosen in ("en", "tr"):
        response.set_cookie(COOKIE, chosen, max_age=365 * 86400, samesite="lax")
    return response


@dataclass
class UiState:
    """What the routes share: the runs folder, how pages name it, the runs started here, the playground."""

    runs_root: Path
    shown: str  # how commands on the pages name runs_root
    jobs: Jobs
    playground: Playground
    examples_dir: Path | None

    def run_dir(self, name: str) -> Path:
        """The folder of run ``name``: a run folder directly under the root, or a sweep's trial
        (``<sweep>/trials/<n>``); any other name is refused."""
        trial = S.trial_dir(self.runs_root, name)
        if trial is not None:
            return trial
        path = self.runs_root / name
        if not RUN_NAME.match(name) or name.startswith(".") or not R.is_run_dir(path):
            raise UsageError(f"no run named {name}")
        return path

    def summary(self, name: str, active: set[Path]) -> R.RunSummary:
        summary = R.summarize(self.run_dir(name), self.jobs.state(name), active)
        summary.name = name  # a trial's folder name is its number alone: its pages link by the full name
        return summary

    def sweep(self, name: str) -> S.SweepView:
        path = self.runs_root / name
        if not S.SWEEP_NAME.match(name) or not S.is_sweep_dir(path):
            raise UsageError(f"no sweep named {name}")
        return S.read_sweep(path)

    def summaries(self) -> list[R.RunSummary]:
        active = R.active_run_dirs()
        return [R.summarize(p, self.jobs.state(p.name), active) for p in R.list_run_dirs(self.runs_root)]

    def form_recipe(self, body: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, str]]:
        """The form's recipe (the example plus the changed fields) as data, checked recipe and changes."""
        from ayar.methods import check_method
        from ayar.recipe import validate_recipe

        example = forms.example_recipes(self.examples_dir).get(str(body.get("example") or ""))
        changes = {str(k): str(v) for k, v in (body.get("changes") or {}).items()}
        data = forms.apply_changes(forms.load_example(example), changes)
        data.setdefault("run", {})["output_dir"] = str(self.runs_root)  # so that the run shows in this UI
        recipe = validate_recipe(data)
        check_method(recipe.method)
        return data, recipe, changes

    def shown_example(self, body: dict[str, Any]) -> Path | None:
        """The form's example recipe as the command line names it (relative to the working folder)."""
        path = forms.example_recipes(self.examples_dir).get(str(body.get("example") or ""))
        if path is None:
            return None
        with contextlib.suppress(ValueError):
            return path.relative_to(Path.cwd())
        return path


def create_ui_app(runs_root: Path, api_keys: list[str] | None = None, shown_root: str | None = None,
                  examples_dir: Path | None = None, allowed_hosts: frozenset[str] | None = None) -> ASGIApp:
    """The UI over the run folders under ``runs_root``; ``shown_root`` is how commands on the pages name it;
    ``allowed_hosts`` (host names without port), when given, are the only Host headers answered."""
    runs_root = Path(runs_root).resolve()
    ui = UiState(runs_root, shown_root or str(runs_root), Jobs(runs_root), Playground(runs_root), examples_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        ui.playground.stop()  # runs started here go on: they are plain `ayar run` processes with their own logs

    app = FastAPI(title="ayar ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs, app.state.playground, app.state.runs_root = ui.jobs, ui.playground, runs_root
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(UsageError, _usage_error)
    _add_run_pages(app, ui)
    _add_sweep_pages(app, ui)
    _add_new_run_and_login_pages(app, ui, list(api_keys or []))
    _add_run_api(app, ui)
    _add_form_api(app, ui)
    return UiGate(app, list(api_keys or []), ui.playground, allowed_hosts)


async def _usage_error(request: Request, exc: UsageError) -> Response:
    """A refused name or value: JSON for the API, a page with the message otherwise."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, 400)
    return _page(request, pages.layout(_lang(request), "ayar", f"<p class=\"error\">{pages.escape(str(exc))}</p>"),
                 404)


def _add_run_pages(app: FastAPI, ui: UiState) -> None:
    """The runs list, a run's page and files, its playground and the comparison of runs."""

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request) -> HTMLResponse:
        return _page(request, pages.runs_page(_lang(request), ui.runs_root, ui.summaries()))

    @app.get("/runs/{name:path}/files/{filename}")
    async def run_file(name: str, filename: str) -> FileResponse:
        path = ui.run_dir(name) / filename
        if filename not in FILES or not path.is_file():
            raise UsageError(f"no file {filename} in run {name}")
        return FileResponse(path)

    @app.get("/runs/{name:path}/play", response_class=HTMLResponse)
    async def play(name: str, request: Request) -> HTMLResponse:
        ui.run_dir(name)
        return _page(request, pages.playground_page(_lang(request), name))

    @app.get("/runs/{name:path}", response_class=HTMLResponse)  # after the routes above: a trial's name has "/"
    async def run(name: str, request: Request) -> HTMLResponse:
        summary = ui.summary(name, R.active_run_dirs())
        return _page(request, pages.run_page(_lang(request), summary, f"{ui.shown}/{name}"))

    @app.get("/compare", response_class=HTMLResponse)
    async def compare(request: Request) -> HTMLResponse:
        names = [n for n in request.query_params.getlist("runs") if n]
        active = R.active_run_dirs()
        chosen = [ui.summary(n, active) for n in dict.fromkeys(names)]
        everything = [p.name for p in R.list_run_dirs(ui.runs_root)]
        return _page(request, pages.compare_page(_lang(request), chosen, everything))


def _add_sweep_pages(app: FastAPI, ui: UiState) -> None:
    """The sweeps list, a sweep's trials and plots, and its Pareto front's points for the chart script."""

    @app.get("/sweeps", response_class=HTMLResponse)
    async def sweeps(request: Request) -> HTMLResponse:
        views = [S.read_sweep(p) for p in S.list_sweep_dirs(ui.runs_root)]
        return _page(request, S.sweeps_page(_lang(request), ui.runs_root, views))

    @app.get("/sweeps/{name}", response_class=HTMLResponse)
    async def sweep(name: str, request: Request) -> HTMLResponse:
        return _page(request, S.sweep_page(_lang(request), ui.sweep(name), ui.runs_root))

    @app.get("/sweeps/{name}/files/{filename}")
    async def sweep_file(name: str, filename: str) -> FileResponse:
        path = ui.sweep(name).path / filename
        if filename not in S.FILES or not path.is_file():
            raise UsageError(f"no file {filename} in sweep {name}")
        return FileResponse(path)

    @app.get("/api/sweeps/{name}/pareto")
    async def api_pareto(name: str) -> dict[str, Any]:
        return S.pareto_series(ui.sweep(name))


def _add_new_run_and_login_pages(app: FastAPI, ui: UiState, api_keys: list[str]) -> None:
    """The new-run form and, when keys are set, the page that asks for one."""

    @app.get("/new", response_class=HTMLResponse)
    async def new(request: Request, example: str | None = None) -> HTMLResponse:
        examples = forms.example_recipes(ui.examples_dir)
        chosen = example if example in examples else ("quickstart" if "quickstart" in examples
                                                      else next(iter(examples), None))
        fields = forms.filled_fields(forms.load_example(examples.get(chosen) if chosen else None))
        return _page(request, pages.new_run_page(_lang(request), list(examples), chosen, fields))

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return _page(request, pages.login_page(_lang(request)))

    @app.post("/login")
    async def login(request: Request) -> Response:
        key = (parse_qs((await request.body()).decode("utf-8", "replace")).get("key") or [""])[0]
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in api_keys):
            return _page(request, pages.login_page(_lang(request), error=True), 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict")
        return response


def _add_run_api(app: FastAPI, ui: UiState) -> None:
    """JSON for the pages' script: run statuses, loss curves, the playground's state, the started jobs."""

    @app.get("/api/runs")
    async def api_runs() -> list[dict[str, Any]]:
        return [s.as_dict() for s in ui.summaries()]

    @app.get("/api/runs/{name:path}/curve")
    async def api_curve(name: str) -> dict[str, Any]:
        path = ui.run_dir(name)
        return {"status": R.run_status(path, ui.jobs.state(name), R.active_run_dirs()),
                "series": R.loss_series(path)}

    @app.get("/api/curves")
    async def api_curves(request: Request) -> dict[str, Any]:
        series: dict[str, Any] = {}
        statuses, active = [], R.active_run_dirs()
        for name in dict.fromkeys(request.query_params.getlist("runs")):
            path = ui.run_dir(name)
            statuses.append(R.run_status(path, ui.jobs.state(name), active))
            for key, points in R.loss_series(path).items():
                series[f"{name} {key}"] = points
        return {"status": "running" if "running" in statuses else "done", "series": series}

    @app.get("/api/play/{name:path}/status")
    async def api_play_status(name: str) -> dict[str, Any]:
        ui.run_dir(name)
        return ui.playground.status(name)

    @app.get("/api/jobs/{name}")
    async def api_job(name: str) -> JSONResponse:
        job = ui.jobs.get(name)
        if job is None:
            return JSONResponse({"error": f"no run named {name} was started here"}, 404)
        return JSONResponse(job.as_dict())


def _add_form_api(app: FastAPI, ui: UiState) -> None:
    """The new-run form's check and start; an invalid recipe is an answer naming its key, not an error."""

    @app.post("/api/recipe/check")
    async def api_check(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            data, recipe, changes = ui.form_recipe(body)
        except UsageError as exc:  # a checked, invalid recipe: an answer, not a failed request
            return JSONResponse({"ok": False, "error": str(exc), "key": _error_key(str(exc))})
        return JSONResponse({"ok": True, "yaml": forms.recipe_yaml(data), "name": recipe.run.name,
                             "cli": forms.cli_command(ui.shown_example(body), changes)})

    @app.post("/api/runs")
    async def api_start(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            data, recipe, changes = ui.form_recipe(body)
            if not RUN_NAME.match(recipe.run.name) or recipe.run.name.startswith("."):
                raise UsageError(f"recipe key 'run.name': '{recipe.run.name}' must be letters, digits, '.', '_' "
                                 "or '-' (it names a folder)")
            job = ui.jobs.start(recipe.run.name, forms.recipe_yaml(data))
        except UsageError as exc:
            return JSONResponse({"ok": False, "error": str(exc), "key": _error_key(str(exc))}, 422)
        return JSONResponse({"ok": True, "name": job.name, "recipe": str(job.recipe),
                             "yaml": forms.recipe_yaml(data), "cli": f"ayar run {job.recipe}"})


def _error_key(message: str) -> str | None:
    """The recipe key a validation message names (to mark its field)."""
    found = re.search(r"recipe key '([^']+)'", message)
    return found.group(1) if found else None


def serve_ui(runs_root: Path, host: str = "127.0.0.1", port: int = 7860, api_keys: list[str] | None = None) -> None:
    """Run the UI under uvicorn until Ctrl-C; binding beyond this machine needs an API key."""
    import uvicorn

    local = host in ("127.0.0.1", "localhost", "::1")
    if not local and not api_keys:
        raise UsageError(f"--host {host} exposes the UI (which starts runs) to the network: give --api-key KEY "
                         "(or AYAR_API_KEY), or keep the default 127.0.0.1")
    app = create_ui_app(Path(runs_root), api_keys, shown_root=str(runs_root).rstrip("/") or ".",
                        allowed_hosts=LOCAL_HOSTS if local else None)
    say(f"ayar ui: http://{host}:{port}/  (runs from {Path(runs_root).resolve()})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3)  # open page polls and streams must not hold Ctrl-C up
