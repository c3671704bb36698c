"""`flanmix build`, `flanmix merge` and `flanmix stats`: build a mixture into shards, combine the parts of a
sharded build, and report realized vs target proportions."""

from __future__ import annotations

import argparse
import json

from flanmix.commands.tasks import add_registry_option


def cmd_build(args: argparse.Namespace) -> int:
    from flanmix.mixture import build

    manifest = build(args.mixture, args.out, seed=args.seed, num_proc=args.num_proc, fmt=args.format,
                     overwrite=args.overwrite, registry_dirs=args.registry, messages=args.messages,
                     num_shards=args.num_shards, shard_index=args.shard_index, rows_per_shard=args.rows_per_shard,
                     progress=not args.quiet)
    size = manifest["size"]
    part = manifest["build"]["part"]
    where = f" (part {part['index'] + 1} of {part['count']})" if part else ""
    print(f"wrote {size['rows']} rows in {len(manifest['shards'])} shard(s) to {args.out}{where}; "
          f"dedup dropped {size['dedup_dropped']}, decontaminated {size['decontaminated']}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from flanmix.mixture import merge

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
    p.add_argument("--num-proc", type=int, default=1, metavar="N", help="render with N processes (default 1)")
    p.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--messages", action="store_true", help="add a chat `messages` column (user/assistant)")
    p.add_argument("--num-shards", type=int, default=1, metavar="K",
                   help="build only part of the mixture: one of K disjoint parts (merge with `flanmix merge`)")
    p.add_argument("--shard-index", type=int, default=0, metavar="I", help="which part to build (0..K-1)")
    p.add_argument("--rows-per-shard", type=int, default=25_000, metavar="R",
                   help="planned rows per shard file (default 25000; part of the build's identity)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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
    p.add_argument("--limit", type=int, default=40, help="rows per table (default 40)")
    p.set_defaults(func=cmd_stats)
