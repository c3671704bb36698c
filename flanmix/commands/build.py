"""`flanmix build`, `flanmix merge` and `flanmix stats`: build a mixture into shards, combine the parts of a
sharded build, and report realized vs target proportions."""

from __future__ import annotations

import argparse
import json

from flanmix.commands.argtypes import non_negative_int, positive_int
from flanmix.commands.tasks import add_registry_option


def cmd_build(args: argparse.Namespace) -> int:
    from flanmix.catalog import mixture_tasks, preflight
    from flanmix.core.atomic import check_writable
    from flanmix.hub import using_mirror
    from flanmix.mixture import build
    from flanmix.registry import Registry

    check_writable(args.out, field="--out", folder=True)  # before planning and rendering, not after
    with using_mirror(args.hub_mirror):  # workers inherit the mirror through the environment
        registry = Registry.discover(args.registry)
        preflight(mixture_tasks(args.mixture, registry))  # every hub source reachable, before reading any
        manifest = build(args.mixture, args.out, seed=args.seed, num_proc=args.num_proc, fmt=args.format,
                         overwrite=args.overwrite, registry_dirs=args.registry,
                         registry=registry,  # discovered once; Ray workers discover its folders again
                         messages=args.messages, num_shards=args.num_shards, shard_index=args.shard_index,
                         rows_per_shard=args.rows_per_shard, progress=not args.quiet, engine=args.engine,
                         address=args.address)
    size = manifest["size"]
    part = manifest["build"]["part"]
    where = f" (part {part['index'] + 1} of {part['count']})" if part else ""
    print(f"wrote {size['rows']} rows in {len(manifest['shards'])} shard(s) to {args.out}{where}; "
          f"dedup dropped {size['dedup_dropped']}, decontaminated {size['decontaminated']}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from flanmix.core.atomic import check_writable
    from flanmix.mixture import merge

    check_writable(args.out, field="--out", folder=True)
    manifest = merge(args.parts, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"merged {len(args.parts)} parts: {manifest['size']['rows']} rows in {len(manifest['shards'])} shard(s) "
          f"to {args.out}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from flanmix.stats import format_report, mixture_stats, plot

    stats = mixture_stats(args.dir, tokenizer=args.tokenizer)
    if args.json:
        print(json.dumps(stats, indent=1))
    else:
        print(format_report(stats, limit=args.limit))
    if args.plot:
        plot(stats, args.plot, limit=args.limit)
        print(f"plot written to {args.plot}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build", help="build a mixture into Parquet/JSONL shards + manifest.json",
                              description="Build a mixture (a YAML file or a bundled name such as `demo`) into "
                                          "sharded Parquet (or JSONL) plus manifest.json, atomically.")
    p.add_argument("mixture", help="mixture file or bundled mixture name")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist unless --overwrite)")
    p.add_argument("--seed", type=int, help="override the mixture's seed")
    p.add_argument("--num-proc", type=positive_int, default=1, metavar="N", help="render with N processes (default 1)")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--messages", action="store_true", help="add a chat `messages` column (user/assistant)")
    p.add_argument("--num-shards", type=positive_int, default=1, metavar="K",
                   help="build only part of the mixture: one of K disjoint parts (merge with `flanmix merge`)")
    p.add_argument("--shard-index", type=non_negative_int, default=0, metavar="I", help="which part to build (0..K-1)")
    p.add_argument("--rows-per-shard", type=positive_int, default=25_000, metavar="R",
                   help="planned rows per shard file (default 25000; part of the build's identity)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="render with local processes (default) or on a Ray cluster (docs/scale-out.md)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: the cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, "
                        "else a local cluster)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--hub-mirror", action="append", default=[], metavar="DIR",
                   help="read hub and repo sources from this mirror (`flanmix data mirror`; repeatable; also "
                        "FLANMIX_HUB_MIRROR=DIR1:DIR2)")
    add_registry_option(p)
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("merge", help="combine the parts of a --num-shards build",
                              description="Check that the parts come from one build (same spec hash and seed, every "
                                          "part once, no overlap) and combine them into one mixture folder.")
    p.add_argument("parts", nargs="+", metavar="PART_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_merge)

    p = subparsers.add_parser("stats", help="realized vs target proportions and lengths of a built mixture",
                              description="Report realized vs target proportions per component, task and template "
                                          "type, and length summaries of a built mixture.")
    p.add_argument("dir", help="a folder written by `flanmix build` or `flanmix merge`")
    p.add_argument("--plot", metavar="FILE.png", help="also plot the proportions")
    p.add_argument("--tokenizer", metavar="PATH", help="count tokens with this tokenizer (folder or tokenizer.json)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--limit", type=positive_int, default=40, help="rows per table (default 40)")
    p.set_defaults(func=cmd_stats)
