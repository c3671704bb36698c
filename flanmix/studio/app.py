"""The studio's web app (Starlette): pages rendered server-side with Jinja, small JSON endpoints for the live parts,
and the guards.

Guards: requests must name this server by its loopback address (or the `--host` it was given), which stops DNS
rebinding; write actions (template save, build) need the per-launch token in an `X-Studio-Token` header, which only
a page opened from the printed URL (token in the query, then a same-site cookie) carries; every path is confined
to the folders the studio was started with (`flanmix.studio.config.under`). Any problem is a message in the page
(or a JSON `error`), never a server error page or a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flanmix.core.errors import FlanmixError
from flanmix.studio import pages
from flanmix.studio.config import StudioConfig
from flanmix.studio.state import HERE, Studio

Handler = Callable[..., Awaitable[Response]]


def page(func: Callable[..., Awaitable[Response]]) -> Handler:
    """A page handler: a FlanmixError becomes a message page, anything else a one-line internal error."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        studio: Studio = request.app.state.studio
        try:
            return await func(studio, request)
        except FlanmixError as err:
            return studio.message(request, str(err))
        except Exception as err:  # noqa: BLE001 - the page says what happened; the console gets the traceback
            traceback.print_exc(file=sys.stderr)
            return studio.message(request, f"internal error: {type(err).__name__}: {err}", title="Internal error",
                                  status=500)

    return wrapper


def api(func: Callable[..., Awaitable[Any]]) -> Handler:
    """A JSON handler: the result as JSON; a problem as `{"error": message}`."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> Response:
        studio: Studio = request.app.state.studio
        try:
            return JSONResponse(await func(studio, request))
        except FlanmixError as err:
            return JSONResponse({"error": str(err), "line": err.line}, status_code=400)
        except Exception as err:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    return wrapper


class Guard(BaseHTTPMiddleware):
    """Refuses requests for another host name (DNS rebinding); stores the token of an opened URL in a cookie."""

    async def dispatch(self, request: Request, call_next: Callable) -> Response:
        studio: Studio = request.app.state.studio
        host = request.headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
        allowed = {"127.0.0.1", "localhost", "::1", studio.config.host.lower()}
        if host not in allowed and studio.config.host not in ("0.0.0.0", "::"):
            return PlainTextResponse(f"flanmix studio: host {host!r} refused", status_code=403)
        response = await call_next(request)
        given = request.query_params.get("token")
        if given and secrets.compare_digest(given, studio.config.token):
            response.set_cookie(studio.cookie_name, given, httponly=True, samesite="strict")
        return response


async def not_found(request: Request, exc: Exception) -> Response:
    """Unknown pages and other HTTP errors: a message in the layout (JSON for the API)."""
    studio: Studio = request.app.state.studio
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    text = "no such page" if status == 404 else (exc.detail if isinstance(exc, HTTPException) else "server error")
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": text}, status_code=status)
    return studio.message(request, f"{request.url.path}: {text}", title="Not found" if status == 404 else "Problem",
                          status=status)


async def server_error(request: Request, exc: Exception) -> Response:
    """A last resort (errors outside the handlers): one line, no traceback in the page."""
    traceback.print_exception(exc, file=sys.stderr)
    return PlainTextResponse(f"flanmix studio: internal error: {type(exc).__name__}", status_code=500)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    yield  # serving
    app.state.studio.builds.stop_all()


def create_app(config: StudioConfig) -> Starlette:
    """The studio's ASGI app for `config`."""
    studio = Studio(config)
    routes = [
        Route("/", page(pages.tasks_page)),
        Route("/tasks/{name}", page(pages.task_page)),
        Route("/tasks/{name}/edit", page(pages.editor_page)),
        Route("/api/tasks/{name}/preview", api(pages.preview_api), methods=["POST"]),
        Route("/api/tasks/{name}/save", api(pages.save_api), methods=["POST"]),
        Route("/mixtures", page(pages.mixtures_page)),
        Route("/mixtures/view", page(pages.mixture_page)),
        Route("/api/mixture", api(pages.mixture_api), methods=["POST"]),
        Route("/api/mixture/sample", api(pages.sample_api), methods=["POST"]),
        Route("/api/mixture/build", api(pages.build_api), methods=["POST"]),
        Route("/api/jobs/{job}", api(pages.job_api)),
        Route("/runs", page(pages.runs_page)),
        Route("/runs/view", page(pages.run_page)),
        Route("/runs/file", page(pages.run_file)),
        Route("/api/run", api(pages.run_api)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard)],
                    exception_handlers={HTTPException: not_found, Exception: server_error},
                    lifespan=_lifespan)
    app.state.studio = studio
    return app

