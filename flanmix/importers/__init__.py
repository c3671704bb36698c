"""Importers: turn promptsource templates, Super-NaturalInstructions tasks, Flan CoT TSVs, T0-rendered files and
local data files into flanmix task specs + template sets.

Every importer returns `[(TaskSpec, TemplateSet), ...]`. Use them in place (`register(items)`) or write them to a
registry folder (`write_registry(items, DIR)`, the `flanmix import` command) and load that with `--registry DIR`.
File sources hold absolute paths in memory and are written relative to the registry folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from flanmix.importers import files, flan_cot, niv2, promptsource, t0
from flanmix.importers._common import Imported, register, render_files, write_registry

__all__ = ["Imported", "files", "flan_cot", "import_shared", "niv2", "promptsource", "register", "render_files",
           "t0", "write_registry", "SHARED_LAYOUT"]

# Where each collection sits under a shared data folder (the layout of ../shared/data).
SHARED_LAYOUT = {
    "promptsource": "templates/promptsource",
    "niv2": "instruction/natural_instructions",
    "flan_cot": "instruction/flan_cot",
    "t0": "instruction/t0_rendered",
}


def import_shared(shared_data_dir: Path | str, out_dir: Path | str | None = None, *, overwrite: bool = False,
                  absolute_paths: bool = False, kinds: Iterable[str] | None = None,
                  notes: list[str] | None = None) -> list[Imported]:
    """Import every promptsource, NIv2, Flan CoT and T0-rendered set found under a shared data folder.

    `kinds` limits the collections (keys of `SHARED_LAYOUT`; e.g. leave out `promptsource`, whose hub sources
    cannot load offline). With `out_dir`, also write them there as one registry folder (atomically). Collections
    whose folder is absent are skipped with a note; finding none at all is an error.
    """
    from flanmix.core.errors import FlanmixError

    selected = list(SHARED_LAYOUT) if kinds is None else list(kinds)
    unknown = [k for k in selected if k not in SHARED_LAYOUT]
    if unknown:
        raise FlanmixError(f"unknown collection {unknown[0]!r}", field="kinds", expected=", ".join(SHARED_LAYOUT))
    root = Path(shared_data_dir)
    if not root.is_dir():
        raise FlanmixError("shared data folder not found", file=root, expected="a folder such as ../shared/data")
    importers = {"promptsource": promptsource.import_path, "niv2": niv2.import_path,
                 "flan_cot": flan_cot.import_path, "t0": t0.import_path}
    items: list[Imported] = []
    for kind in selected:
        folder = root / SHARED_LAYOUT[kind]
        if not folder.is_dir():
            if notes is not None:
                notes.append(f"{folder}: not found, no {kind} tasks imported")
            continue
        items.extend(importers[kind](folder, notes=notes))
    if not items:
        raise FlanmixError("nothing to import", file=root, expected=" or ".join(SHARED_LAYOUT.values()))
    if out_dir is not None:
        write_registry(items, out_dir, overwrite=overwrite, absolute_paths=absolute_paths)
    return items
