"""`flanmix import {promptsource,niv2,flan-cot,t0,flan,files,shared} SRC --out DIR`: write task specs + templates
into a registry folder, usable with `--registry DIR`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def _common(parser: argparse.ArgumentParser, *, cluster: bool = True) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="registry folder to write (created if missing)")
    parser.add_argument("--overwrite", action="store_true", help="replace task/template files that already exist")
    parser.add_argument("--absolute-paths", action="store_true",
                        help="write data file paths as absolute paths (default: relative to DIR)")
    if cluster:
        parser.add_argument("--cluster", help="cluster of every imported task (default: derived per task)")


def _finish(args: argparse.Namespace, items: list, notes: list[str]) -> int:
    from flanmix.importers import write_registry

    written = write_registry(items, args.out, overwrite=args.overwrite, absolute_paths=args.absolute_paths)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    templates = sum(len(t.zero_shot) + len(t.cot) for _, t in items)
    by_collection = ", ".join(f"{n} {c}" for c, n in sorted(Counter(s.collection for s, _ in items).items()))
    print(f"wrote {len(written)} tasks ({by_collection}; {templates} templates) to {args.out}")
    print(f"use them with: flanmix tasks list --registry {args.out}")
    return 0


def cmd_import_flan(args: argparse.Namespace) -> int:
    from flanmix.importers.flan import import_flan

    result = import_flan(args.src, args.out, overwrite=args.overwrite)
    c = result.counts
    print(f"wrote {len(result.sets)} template sets to {args.out}/templates: {c['keys']} FLAN keys "
          f"({c['zero_shot']} zero-shot, {c['zero_shot_no_options']} no-options, {c['few_shot']} few-shot "
          f"patterns), {c['inline_fs']} inline few-shot patterns, {c['flan2021_keys']} Flan 2021 keys")
    print(f'render them with: flanmix render --batch FILE.jsonl --registry {args.out}  '
          '(a line: {"templates": "flan/rte", "variant": "zs_opt", "template": 0, "row": {...}})')
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from flanmix import importers

    if args.import_kind == "flan":
        return cmd_import_flan(args)

    notes: list[str] = []
    failures: list = []
    kind = args.import_kind
    if kind == "shared":
        items = importers.import_shared(args.src, kinds=args.only or None, notes=notes)
    elif kind == "files":
        items = importers.files.import_file(args.src, name=args.name, input_field=args.input_field,
                                            target_field=args.target_field, cluster=args.cluster,
                                            format=args.format, collection=args.collection)
    else:
        module = {"promptsource": importers.promptsource, "niv2": importers.niv2, "flan-cot": importers.flan_cot,
                  "t0": importers.t0}[kind]
        kwargs = {"split": args.split, "failures": failures} if kind == "promptsource" else {}
        items = module.import_path(Path(args.src), cluster=args.cluster, notes=notes, **kwargs)
    code = _finish(args, items, notes)
    for err in failures:  # files that could not be imported (the others were written): one line each, exit 2
        print(f"flanmix: error: {err}", file=sys.stderr)
    return 2 if failures else code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import", help="import promptsource / NIv2 / Flan CoT / T0 / FLAN templates / local files",
        description="Turn external task collections into flanmix task specs and templates in a registry folder "
                    "(DIR/<task>.yaml + DIR/templates/...). Load them with --registry DIR.")
    sub = parser.add_subparsers(dest="import_kind", metavar="KIND", required=True)

    p = sub.add_parser("promptsource", help="promptsource templates.yaml (a file or a folder of them)")
    p.add_argument("src", help="templates.yaml, or a folder searched for **/templates.yaml")
    p.add_argument("--split", default="train", help="hub split the tasks read (default train)")
    _common(p)

    p = sub.add_parser("niv2", help="Super-NaturalInstructions task JSON (a file or a folder of task*.json)")
    p.add_argument("src")
    _common(p)

    p = sub.add_parser("flan-cot", help="Flan v2 CoT TSV (a file or a folder of *.tsv)")
    p.add_argument("src")
    _common(p)

    p = sub.add_parser("t0", help="T0-rendered prompt/completion JSONL (a file or a folder of *.jsonl)")
    p.add_argument("src")
    _common(p)

    p = sub.add_parser("files", help="a local json/jsonl/csv/tsv/parquet file as a simple task")
    p.add_argument("src", metavar="PATH")
    p.add_argument("--name", required=True, help="task name")
    p.add_argument("--input-field", required=True, help="column holding the input")
    p.add_argument("--target-field", required=True, help="column holding the target")
    p.add_argument("--format", help="file format (default: from the suffix)")
    p.add_argument("--collection", default="local", help="collection name (default local)")
    _common(p)

    p = sub.add_parser("flan", help="FLAN's own templates (templates.py, flan_templates_branched.py) as template sets",
                       description="Read FLAN's template files as data (never run) and write one template set per "
                                   "FLAN pattern key to DIR/templates/flan/<key>.yaml.")
    p.add_argument("src", help="folder holding FLAN's templates.py and flan_templates_branched.py")
    p.add_argument("--out", required=True, metavar="DIR", help="registry folder to write (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace template files that already exist")

    p = sub.add_parser("shared", help="everything under a shared data folder (promptsource, NIv2, CoT, T0)")
    p.add_argument("src", metavar="SHARED_DATA_DIR")
    p.add_argument("--only", action="append", choices=["promptsource", "niv2", "flan_cot", "t0"],
                   help="import only this collection (repeatable; default all)")
    _common(p, cluster=False)

    parser.set_defaults(func=cmd_import)
    for action in sub.choices.values():
        action.set_defaults(func=cmd_import)
