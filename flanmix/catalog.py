"""The Flan collection catalog: FLAN's own list of the collection (`flan_collection_info.csv`) joined with the task
specs flanmix ships (`task_registry/flan/`), and the hub sources a mixture needs (for `flanmix data mirror` and
the build's preflight).

FLAN's list names datasets per submix: Flan 2021 (FLAN, FLAN/T0 rows: one per seqio task), T0 (one row per P3
prompt, named in its "Specific Task Category" column), NIv2 (one row per task, `taskNNN_...`), CoT (`cot_*` and
`stream_*` datasets, flanmix's `cot_*` tasks) and Dialog. A catalog entry is covered when a task spec of that
collection maps it.
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from flanmix.core.errors import FlanmixError
from flanmix.core.resources import bundled_dir
from flanmix.hub import mirror_roots, network_available, reachable
from flanmix.mixture.resolve import select_tasks
from flanmix.mixture.spec import MixtureBody, MixtureSpec, as_spec, find_mixture, load_spec
from flanmix.registry import Registry
from flanmix.spec import SourceSpec
from flanmix.task import Task

CSV_NAME = "flan_collection_info.csv"
#: FLAN's "Source" column -> the collection name flanmix (and FLAN's released data) uses for it.
SUBMIXES = {"FLAN": "Flan2021", "FLAN/T0": "Flan2021", "T0": "T0", "NIv2": "NIv2", "CoT": "CoT",
            "Dialog": "Dialog"}
COLLECTIONS = ("Flan2021", "T0", "NIv2", "CoT", "Dialog")
#: Per collection, the CSV column holding the task name (T0 and NIv2 list one row per prompt / task).
NAME_COLUMN = {"Flan2021": "Dataset", "T0": "Specific Task Category", "NIv2": "Specific Task Category",
               "CoT": "Dataset", "Dialog": "Dataset"}
NOTES = {("Dialog", "task_master"): "removed from Flan 2022 (FLAN's paper)"}


@dataclass
class Entry:
    """One task of FLAN's list and what flanmix has for it."""

    collection: str
    name: str
    dataset: str
    category: str
    tasks: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    mapped: bool = False
    verified: bool | None = None
    clusters: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def covered(self) -> bool:
        return bool(self.tasks)


def find_csv(flan_dir: str | Path | None = None) -> Path:
    """FLAN's `flan_collection_info.csv`: in `flan_dir` (a FLAN checkout or a folder holding the file), else the
    copy shipped with FLAN's templates (`templates/flan/`)."""
    if flan_dir is not None:
        for candidate in (Path(flan_dir) / CSV_NAME, Path(flan_dir) / "flan" / "v2" / CSV_NAME):
            if candidate.is_file():
                return candidate
        raise FlanmixError(f"{CSV_NAME} not found", file=flan_dir, field="--flan",
                           expected=f"a FLAN checkout (flan/v2/{CSV_NAME}) or a folder holding {CSV_NAME}")
    return bundled_dir("templates") / "flan" / CSV_NAME


def read_collection(path: Path) -> list[Entry]:
    """FLAN's list as entries, one per task of the five submixes (deduplicated, in the file's order)."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "Source" not in rows[0] or "Dataset" not in rows[0]:
        raise FlanmixError("not FLAN's collection list", file=path, line=1,
                           expected="columns Source, Dataset, Specific Task Category, ...")
    entries: dict[tuple[str, str], Entry] = {}
    for row in rows:
        collection = SUBMIXES.get(row["Source"])
        if collection is None:  # Program Synthesis: not part of the Flan 2022 mixture
            continue
        name = row[NAME_COLUMN[collection]]
        key = (collection, name)
        if key not in entries:
            entries[key] = Entry(collection, name, row["Dataset"], row.get("Generic Task Category", ""),
                                 note=NOTES.get(key, ""))
    return list(entries.values())


def _aliases(entry: Entry) -> set[str]:
    """Names a task spec may carry for an entry (CoT's `stream_x` datasets are flanmix's `cot_x` tasks)."""
    names = {entry.name}
    if entry.name.startswith("stream_"):
        names.add("cot_" + entry.name[len("stream_"):])
    return names


def _files_match(task: Task, entry: Entry) -> bool:
    """Whether a NIv2 spec's file patterns (FLAN's one task over many task files) include the entry's task file."""
    files = task.spec.source.files
    patterns = [files] if isinstance(files, str) else list(files or [])
    return any(fnmatch.fnmatchcase(f"{entry.name}.json", PurePosixPath(p).name) for p in patterns)


def _entry_of(task: Task, entries: list[Entry]) -> list[Entry]:
    collection = task.spec.collection
    name = task.name[:-3] if task.name.endswith("_ii") else task.name  # an inversion counts for its parent
    exact = [e for e in entries if e.collection == collection and name in _aliases(e)]
    if exact:
        return exact
    if collection == "NIv2":
        return [e for e in entries if e.collection == "NIv2" and _files_match(task, e)]
    # FLAN lists some datasets once for several seqio tasks (mnli -> mnli_matched, mnli_mismatched).
    prefixed = [e for e in entries if e.collection == collection and name.startswith(e.name + "_")]
    return [max(prefixed, key=lambda e: len(e.name))] if prefixed else []


def catalog(registry: Registry, csv_path: Path | None = None) -> tuple[list[Entry], list[Task]]:
    """FLAN's list joined with the registry's tasks of the five collections; also the tasks FLAN does not list."""
    entries = read_collection(csv_path or find_csv())
    extra: list[Task] = []
    for task in registry:
        if task.spec.collection not in COLLECTIONS:
            continue
        found = _entry_of(task, entries)
        if not found:
            extra.append(task)
        for entry in found:
            spec = task.spec
            entry.tasks.append(task.name)
            entry.templates.append(spec.templates if isinstance(spec.templates, str) else "<inline>")
            entry.sources.append(spec.source.describe())
            # A mapping: the spec's `fields`, or a repository format that reads FLAN's own fields (CoT TSVs, NIv2).
            entry.mapped = entry.mapped or bool(spec.fields) or spec.source.kind == "repo"
            if spec.verified is not None:
                entry.verified = spec.verified if entry.verified is None else entry.verified and spec.verified
            if task.cluster not in entry.clusters:
                entry.clusters.append(task.cluster)
    return entries, extra


def summary(entries: list[Entry], extra: list[Task]) -> dict[str, dict]:
    """Per collection: tasks covered / tasks in FLAN's list, and the covered ones whose source is unverified."""
    out: dict[str, dict] = {}
    for collection in COLLECTIONS:
        mine = [e for e in entries if e.collection == collection]
        out[collection] = {
            "covered": sum(e.covered for e in mine), "total": len(mine),
            "mapped": sum(e.mapped for e in mine),
            "verified": sum(e.verified is True for e in mine),
            "unverified": [e.name for e in mine if e.verified is False],
            "extra_tasks": [t.name for t in extra if t.spec.collection == collection],
        }
    return out


def catalog_json(entries: list[Entry], extra: list[Task]) -> dict:
    """`flanmix catalog --json`: the summary and every entry."""
    return {"summary": summary(entries, extra),
            "entries": [asdict(e) | {"covered": e.covered} for e in entries]}


def format_catalog(entries: list[Entry], extra: list[Task], *, show_uncovered: bool = True) -> str:
    """The plain-text catalog: one line per FLAN task (covered, or all), then a summary line per submix."""
    rows = [("SUBMIX", "FLAN TASK", "TASKS", "CLUSTER", "SOURCE", "MAP", "VERIFIED")]
    for e in entries:
        if not e.covered and not show_uncovered:
            continue
        verified = "-" if e.verified is None else "yes" if e.verified else "NO"
        rows.append((e.collection, e.name, ",".join(e.tasks) or "-", ",".join(e.clusters) or "-",
                     (e.sources[0] + (f" (+{len(e.sources) - 1})" if len(e.sources) > 1 else "")) if e.sources
                     else "-", "yes" if e.mapped else "-", verified + (f"  ({e.note})" if e.note else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append("")
    for collection, s in summary(entries, extra).items():
        line = (f"{collection}: {s['covered']}/{s['total']} tasks covered, {s['mapped']} with a field mapping, "
                f"{s['verified']} sources verified")
        if s["unverified"]:
            line += f"; verified: false: {', '.join(s['unverified'])}"
        if s["extra_tasks"]:
            line += f"; not in FLAN's list: {', '.join(s['extra_tasks'])}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- mixture sources
def mixture_tasks(mixture: MixtureSpec | dict | str | Path, registry: Registry) -> list[Task]:
    """Every task a mixture selects (nested mixtures and decontamination tasks included), without reading rows."""
    spec, doc = as_spec(mixture)
    found: dict[str, Task] = {}

    def walk(body: MixtureBody, base: Path, stack: tuple[str, ...]) -> None:
        for comp in body.components:
            if isinstance(comp.mixture, str):
                file = find_mixture(comp.mixture, base)
                key = str(file.resolve())
                if key not in stack:  # a cycle: resolve() reports it with the file and line
                    walk(load_spec(file)[0], file.parent, (*stack, key))
            elif comp.mixture is not None:
                walk(comp.mixture, base, stack)
            else:
                for task in select_tasks(registry, comp):
                    found.setdefault(task.name, task)

    walk(spec, doc.path.parent if doc else Path.cwd(), (str(doc.path.resolve()),) if doc else ())
    for name in spec.decontaminate.tasks if spec.decontaminate else []:
        found.setdefault(name, registry.get(name))
    return list(found.values())


def remote_sources(tasks: list[Task]) -> list[tuple[Task, SourceSpec]]:
    """The hub and repo sources of `tasks` (which need the network or a mirror)."""
    return [(t, t.spec.source) for t in tasks if t.spec.source.kind in ("hub", "repo")]


def preflight(tasks: list[Task], *, online: bool | None = None) -> None:
    """Fail before anything is read or rendered when a hub or repo source cannot be reached: not in the mirror in
    effect, or (without a mirror) no network. One line lists every unreachable source."""
    remote = remote_sources(tasks)
    if not remote:
        return
    roots = mirror_roots()
    if online is None:
        online = bool(not roots and any(s.kind == "hub" for _, s in remote) and network_available())
    missing = [(t, s) for t, s in remote if not reachable(s, roots, online)]
    if not missing:
        return
    listed = ", ".join(f"{t.name} ({s.describe()})" for t, s in missing)
    if roots:
        where = f"not in the hub mirror {', '.join(map(str, roots))}"
        hint = "add them with `flanmix data mirror MIXTURE --to DIR`"
    else:
        where = "unreachable (no hub mirror" + (")" if online else ", no network)")
        hint = "mirror them where the network is (`flanmix data mirror MIXTURE --to DIR`), then --hub-mirror DIR"
    raise FlanmixError(f"{len(missing)} of {len(remote)} sources {where}: {listed}", field="--hub-mirror",
                       expected=hint)
