"""The state of one studio: its configuration, the registry it serves, its builds and its page templates."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from flanmix import __version__
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry
from flanmix.studio.builds import Builds
from flanmix.studio.config import StudioConfig

HERE = Path(__file__).resolve().parent
TOKEN_HEADER = "x-studio-token"


class Studio:
    """The state of one studio: its configuration, the registry (loaded on first use, reloaded on request or after a
    save), the builds, and the page templates."""

    def __init__(self, config: StudioConfig) -> None:
        self.config = config
        self.builds = Builds()
        self.lock = threading.Lock()
        self.loaded: Registry | None = None
        self.table: list[dict[str, Any]] | None = None
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        self.env.filters["pct"] = lambda v, digits=1: "-" if v is None else f"{v * 100:.{digits}f}%"
        self.env.filters["num"] = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        self.env.globals["version"] = __version__

    def registry(self) -> Registry:
        """The registry of the configured folders (bundled, FLANMIX_REGISTRY, --registry, --writable)."""
        with self.lock:
            if self.loaded is None:
                self.loaded = Registry.discover(self.config.registry_dirs)
                self.table = None
            return self.loaded

    def reload(self) -> None:
        """Forget the loaded registry: the next request reads every spec and template file again."""
        with self.lock:
            self.loaded, self.table = None, None

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the launch token (in the URL, or in the cookie that URL set)."""
        given = request.query_params.get("token") or request.cookies.get(self.cookie_name) or ""
        return secrets.compare_digest(given, self.config.token)

    @property
    def cookie_name(self) -> str:
        # Cookies are shared across the ports of one host: one name per studio port.
        return f"flanmix_studio_{self.config.port}"

    def check_token(self, request: Request) -> None:
        """Refuse a write action without the launch token in its header."""
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), self.config.token):
            raise FlanmixError("this action needs the studio's token", field="token",
                               expected="the page opened from the URL `flanmix studio` printed (with ?token=...)")

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """A page of the layout, with the token for its scripts when the request is authorized."""
        token = self.config.token if self.authorized(request) else ""
        html = self.env.get_template(template).render(token=token, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    def message(self, request: Request, text: str, *, title: str = "Problem", status: int = 400) -> HTMLResponse:
        """A page that says what went wrong, in the layout."""
        return self.render(request, "message.html", status=status, title=title, text=text)



async def to_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run blocking work (loading rows, rendering, resolving) off the event loop."""
    return await run_in_threadpool(func, *args, **kwargs)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (a FlanmixError for anything else)."""
    try:
        body = await request.json()
    except ValueError:
        raise FlanmixError("the request body is not JSON", field="body") from None
    if not isinstance(body, dict):
        raise FlanmixError("the request body must be a JSON object", field="body")
    return body
