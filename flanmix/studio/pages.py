"""The studio's pages and JSON endpoints. Each handler takes the `Studio` and the request; blocking work (loading
rows, rendering, resolving) runs in a worker thread; problems are raised as FlanmixError and shown by the caller
(`flanmix.studio.app.page` / `api`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import YamlDoc
from flanmix.studio import builds, mixtures, runs, tasks
from flanmix.studio.config import under
from flanmix.studio.state import Studio, json_body, to_thread
from flanmix.task import Task

IMAGE_SUFFIXES = {".png", ".svg", ".jpg", ".jpeg"}


def _int(value: Any, default: int, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(low, min(high, number))


def _render_options(params: Any) -> dict[str, Any]:
    """Row, row count, seed and randomized options from query parameters or a JSON body."""
    return {"start": _int(params.get("row"), 0, 0, 10**9), "count": _int(params.get("n"), 1, 1, tasks.MAX_ROWS),
            "seed": _int(params.get("seed"), 0, -(2**31), 2**31), "randomize": str(params.get("random", "")).lower()
            in ("1", "true", "on", "yes")}


# ------------------------------------------------------------------------------------------------ tasks

async def tasks_page(studio: Studio, request: Request) -> Response:
    """The registry as a searchable, filterable table."""
    if request.query_params.get("reload"):
        studio.reload()
    try:
        registry = await to_thread(studio.registry)
    except FlanmixError as err:
        return studio.render(request, "tasks.html", rows=[], error=str(err), clusters=[], collections=[], kinds=[])
    if studio.table is None:
        studio.table = tasks.table_rows(registry)
    rows = studio.table
    return studio.render(request, "tasks.html", rows=rows, error=None, clusters=sorted({r["cluster"] for r in rows}),
                         collections=sorted({r["collection"] for r in rows}), kinds=sorted({r["kind"] for r in rows}))


def _task(studio: Studio, name: str) -> Task:
    return studio.registry().get(name)


def _task_context(studio: Studio, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Everything the task page shows: spec, rows, renders (or why the rows could not be read)."""
    task = _task(studio, name)
    context: dict[str, Any] = {"task": task, "spec": task.spec, "options": options, "variants": TEMPLATE_TYPES,
                               "used": tasks.task_variants(task), "origin": tasks.origin(task), "grid": None,
                               "data": None, "rows_error": None, "examples": []}
    try:
        pool = task.examples("train") or task.examples("validation")
        options["start"] = min(options["start"], max(0, len(pool) - 1))
        examples = tasks.rows_of(task, options["start"], options["count"])
        context["data"] = tasks.data_table(task, options["start"])
        context["examples"] = examples
        context["grid"] = tasks.render_grid(task, examples, seed=options["seed"], randomize=options["randomize"])
    except FlanmixError as err:
        context["rows_error"] = str(err)
    return context


async def task_page(studio: Studio, request: Request) -> Response:
    """One task: spec, data rows, every template in every variant on the chosen rows."""
    options = _render_options(request.query_params)
    context = await to_thread(_task_context, studio, request.path_params["name"], options)
    return studio.render(request, "task.html", **context)


async def editor_page(studio: Studio, request: Request) -> Response:
    """The template editor of a task's template file (or of its spec, for inline templates)."""
    task = await to_thread(_task, studio, request.path_params["name"])
    path = Path(task.template_file) if task.template_file else None
    if path is None or not path.is_file():
        raise FlanmixError(f"task {task.name!r} has no template file to edit (registered from Python)")
    text = path.read_text(encoding="utf-8")
    return studio.render(request, "editor.html", task=task, file=str(path), text=text, inline=tasks.is_inline(task),
                         base=tasks.text_hash(text),
                         writable=studio.config.is_writable(path), options=_render_options(request.query_params),
                         writable_dirs=[str(p) for p in studio.config.writable])


def _preview(studio: Studio, name: str, text: str, options: dict[str, Any]) -> dict[str, Any]:
    task = _task(studio, name)
    grid, errors = tasks.preview(task, text, start=options["start"], count=options["count"], seed=options["seed"],
                                 randomize=options["randomize"])
    html = "" if grid is None else studio.env.get_template("_grid.html").render(
        grid=grid, used=tasks.task_variants(task), compact=True)
    return {"html": html, "errors": errors, "renders": grid.renders if grid else 0,
            "ms": round(grid.seconds * 1000, 1) if grid else 0}


async def preview_api(studio: Studio, request: Request) -> dict[str, Any]:
    """Render the editor's text on the chosen rows: the renders as HTML, the problems with their lines."""
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise FlanmixError("'text' must be the template file's text", field="text")
    return await to_thread(_preview, studio, request.path_params["name"], text, _render_options(body))


def _save(studio: Studio, name: str, text: str, base: str | None) -> dict[str, str]:
    task = _task(studio, name)
    path = Path(task.template_file) if task.template_file else Path(".")
    result = tasks.save(task, text, studio.config.is_writable(path), base)
    studio.reload()  # every task using this set sees the new text
    return result


async def save_api(studio: Studio, request: Request) -> dict[str, Any]:
    """Save the editor's text (token required)."""
    studio.check_token(request)
    body = await json_body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise FlanmixError("'text' must be the template file's text", field="text")
    base = body.get("base")
    return await to_thread(_save, studio, request.path_params["name"], text, base if isinstance(base, str) else None)


# ------------------------------------------------------------------------------------------------ mixtures

async def mixtures_page(studio: Studio, request: Request) -> Response:
    """The mixture files the studio can open."""
    found = await to_thread(mixtures.list_mixtures, studio.config.mixture_roots())
    return studio.render(request, "mixtures.html", mixtures=found, roots=studio.config.mixture_roots())


def mixture_path(studio: Studio, ref: Any) -> Path:
    """The file of a mixture reference `root:relative/path.yaml`, confined to that root."""
    if not isinstance(ref, str) or ":" not in ref:
        raise FlanmixError(f"not a mixture reference: {ref!r}", field="ref", expected="ROOT:path.yaml")
    key, rel = ref.split(":", 1)
    roots = studio.config.mixture_roots()
    if key not in roots:
        raise FlanmixError(f"unknown mixture folder {key!r}", field="ref", expected=", ".join(roots))
    path = under(roots[key], rel, what="mixture")
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        raise FlanmixError("no such mixture file", file=path, field="ref", expected="a .yaml file")
    return path


def _mixture_data(studio: Studio, ref: str, overrides: dict[str, float]) -> dict[str, Any]:
    path = mixture_path(studio, ref)
    view = mixtures.load(path, studio.registry(), overrides)
    tree = mixtures.tree_view(view)
    return {"shares": view.shares, "top": view.top, "planned": mixtures.planned_total(view),
            "size": view.spec.size.model_dump(exclude_none=True) if view.spec.size else None,
            "tree_html": studio.env.get_template("_tree.html").render(tree=tree), "leaves": len(view.resolved.leaves)}


async def mixture_page(studio: Studio, request: Request) -> Response:
    """One mixture: its source, knobs, resolved tree, target shares, sampled rows and the build button."""
    ref = request.query_params.get("ref", "")
    path = mixture_path(studio, ref)
    text = path.read_text(encoding="utf-8")
    context: dict[str, Any] = {"ref": ref, "file": str(path), "text": text, "knobs": [], "data": None, "error": None,
                               "builds": str(studio.config.builds), "name": path.stem, "description": ""}
    try:
        doc = YamlDoc(path, text)
        if isinstance(doc.data, dict):
            context["knobs"] = mixtures.knobs(doc.data)
            context["name"] = str(doc.data.get("name") or path.stem)
            context["description"] = str(doc.data.get("description") or "")
        context["data"] = await to_thread(_mixture_data, studio, ref, {})
    except FlanmixError as err:
        context["error"] = {"message": str(err), "line": err.line}
    return studio.render(request, "mixture.html", **context)


async def mixture_api(studio: Studio, request: Request) -> dict[str, Any]:
    """Shares and tree of a mixture with the page's changes."""
    body = await json_body(request)
    return await to_thread(_mixture_data, studio, body.get("ref"), mixtures.parse_overrides(body.get("overrides")))


def _sample(studio: Studio, ref: str, overrides: dict[str, float], start: int, count: int) -> dict[str, Any]:
    view = mixtures.load(mixture_path(studio, ref), studio.registry(), overrides)
    return {"rows": mixtures.sample_rows(view, start=start, count=count), "planned": mixtures.planned_total(view)}


async def sample_api(studio: Studio, request: Request) -> dict[str, Any]:
    """Rows of the mixture's plan, rendered as a build renders them."""
    body = await json_body(request)
    return await to_thread(_sample, studio, body.get("ref"), mixtures.parse_overrides(body.get("overrides")),
                           _int(body.get("start"), 0, 0, 10**9), _int(body.get("count"), mixtures.SAMPLE_ROWS, 1, 50))


def _start_build(studio: Studio, ref: str, overrides: dict[str, float]) -> dict[str, Any]:
    path = mixture_path(studio, ref)
    view = mixtures.load(path, studio.registry(), overrides)  # fail here, in the page, before starting anything
    if view.spec.size is None:
        raise FlanmixError("the mixture has no size", file=path, field="size",
                           expected="size in the file, or rows to build in the page")
    name = builds.safe_name(view.spec.name or path.stem)
    out = studio.config.builds / name
    spec_file = path
    if overrides:
        changed = mixtures.absolutized(view.data, path.parent)
        spec_file = builds.write_spec(changed, studio.config.builds / f"{name}.yaml")
    command = builds.build_command(spec_file, out, studio.config.registry_dirs)
    return studio.builds.start(view.spec.name or path.stem, out, command).to_json()


async def build_api(studio: Studio, request: Request) -> dict[str, Any]:
    """Start building the mixture with the page's changes (token required)."""
    studio.check_token(request)
    body = await json_body(request)
    return await to_thread(_start_build, studio, body.get("ref"), mixtures.parse_overrides(body.get("overrides")))


async def job_api(studio: Studio, request: Request) -> dict[str, Any]:
    """A build's progress (and its stats once done)."""
    return studio.builds.get(request.path_params["job"]).to_json()


# ------------------------------------------------------------------------------------------------ runs

async def runs_page(studio: Studio, request: Request) -> Response:
    """Training runs, ablations and eval reports under the runs folder."""
    found = await to_thread(runs.discover, studio.config.runs)
    return studio.render(request, "runs.html", runs=found, root=str(studio.config.runs),
                         exists=studio.config.runs.is_dir())


def run_path(studio: Studio, rel: Any) -> Path:
    """A path under the runs folder (confined to it)."""
    if not isinstance(rel, str):
        raise FlanmixError("which run?", field="path")
    if rel in ("", "."):
        return studio.config.runs.resolve()
    return under(studio.config.runs, rel, what="run")


async def run_page(studio: Studio, request: Request) -> Response:
    """A training run (curves, evals), an ablation (results, plots, cells) or an eval report."""
    rel = request.query_params.get("path", "")
    path = run_path(studio, rel)
    root = studio.config.runs.resolve()
    if path.is_file() and path.suffix == ".json":
        report = await to_thread(runs.eval_report, path)
        if report is None:
            raise FlanmixError("not an evaluation report", file=path, expected="a `flanmix eval --out` JSON file")
        return studio.render(request, "eval.html", rel=rel, report=runs.eval_table(report))
    if not path.is_dir():
        raise FlanmixError("no such run folder", file=path)
    if runs.is_ablation(path):
        view = await to_thread(runs.ablation_view, path, root)
        return studio.render(request, "ablation.html", rel=rel, view=view)
    view = await to_thread(runs.run_view, path)
    return studio.render(request, "run.html", rel=rel, view=view)


async def run_api(studio: Studio, request: Request) -> dict[str, Any]:
    """A run's curves and state, for the page's refresh (or an ablation's last update)."""
    path = run_path(studio, request.query_params.get("path"))
    if runs.is_ablation(path):
        return {"updated": (await to_thread(runs.ablation_view, path, studio.config.runs.resolve()))["updated"]}
    view = await to_thread(runs.run_view, path)
    return {"metrics": view["metrics"], "live": view["live"], "final": view["final"]}


async def run_file(studio: Studio, request: Request) -> Response:
    """An image under the runs folder (an ablation's plots)."""
    path = run_path(studio, request.query_params.get("path"))
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        raise FlanmixError("not an image of a run", file=path, expected="a .png or .svg file")
    return FileResponse(path)
