"""`flanmix catalog`: FLAN's list of the Flan collection joined with the task specs flanmix ships (coverage,
sources, field mappings, verified hub names, clusters)."""

from __future__ import annotations

import argparse
import json

from flanmix.commands.tasks import add_registry_option
from flanmix.core.errors import FlanmixError


def cmd_catalog(args: argparse.Namespace) -> int:
    from flanmix.catalog import COLLECTIONS, catalog, catalog_json, find_csv, format_catalog
    from flanmix.registry import Registry

    entries, extra = catalog(Registry.discover(args.registry), find_csv(args.flan))
    if args.source:
        wanted = {c.lower(): c for c in COLLECTIONS}.get(args.source.lower())
        if wanted is None:
            raise FlanmixError(f"unknown submix {args.source!r}", field="--source", expected=" | ".join(COLLECTIONS))
        entries = [e for e in entries if e.collection == wanted]
        extra = [t for t in extra if t.spec.collection == wanted]
    if args.json:
        data = catalog_json(entries, extra)
        if args.source:
            data["summary"] = {k: v for k, v in data["summary"].items() if k == wanted}
        print(json.dumps(data, indent=1))
    else:
        text = format_catalog(entries, extra, show_uncovered=args.all or bool(args.source))
        if args.source:
            text = "\n".join(line for line in text.splitlines()
                             if ":" not in line.split(" ")[0] or line.startswith(f"{wanted}:"))
        print(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("catalog", help="the Flan collection: FLAN's task list and flanmix's coverage",
                              description="FLAN's list of the collection (flan_collection_info.csv) joined with the "
                                          "bundled task specs: for each task whether templates, a source and a "
                                          "field mapping exist, whether the hub name is verified, and its cluster; "
                                          "then tasks covered / tasks in FLAN per submix.")
    p.add_argument("--source", metavar="SUBMIX", help="only one submix: Flan2021, T0, NIv2, CoT or Dialog")
    p.add_argument("--json", action="store_true", help="print JSON (summary + every entry)")
    p.add_argument("--all", action="store_true", help="list uncovered tasks too (default: covered ones + summary)")
    p.add_argument("--flan", metavar="DIR", help="read flan_collection_info.csv from a FLAN checkout or folder "
                                                 "(default: the copy shipped in templates/flan/)")
    add_registry_option(p)
    p.set_defaults(func=cmd_catalog)
