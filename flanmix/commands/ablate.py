"""`flanmix ablate`: run (or resume) a scaling-ablation grid — task count × model size × seeds.

    flanmix ablate ablations/demo.yaml --out runs/ablate            # run; a rerun skips complete cells
    flanmix ablate ablations/demo.yaml --out runs/ablate --dry-run  # plan + guards only
    flanmix ablate ablations/demo.yaml --out runs/ablate --report   # rewrite tables/plots from stored results
"""

from __future__ import annotations

import argparse
import sys

from flanmix.commands.argtypes import positive_int
from flanmix.commands.tasks import add_allow_path_option


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate",
        help="scaling ablation: held-out score over task count x model size (x seeds)",
        description="For every cell of the grid in ABLATION.yaml: build the mixture of a nested task subset, run "
                    "SFT with an equal budget, evaluate on held-out clusters and on seen tasks. Writes "
                    "results.csv/.jsonl/.md and plots to --out. Complete cells are skipped on rerun.",
    )
    p.add_argument("spec", metavar="ABLATION.yaml", help="the ablation spec (see docs/ablations.md)")
    p.add_argument("--out", required=True, help="run folder (created; reused to resume)")
    p.add_argument("--registry", action="append", default=[], metavar="DIR",
                   help="extra task registry folder (repeatable)")
    p.add_argument("--only", metavar="GLOB", help="run only the cells whose id matches (e.g. 'n004-*')")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (overrides the spec; 1 is fastest when other jobs share the cores)")
    p.add_argument("--jobs", type=positive_int, metavar="N", help="cells run at once (overrides the spec)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="run cells as local processes (default) or as Ray tasks with the spec's resources "
                        "(docs/scale-out.md)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: the cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, "
                        "else a local cluster)")
    p.add_argument("--dry-run", action="store_true", help="plan and check the grid (incl. budgets), train nothing")
    p.add_argument("--report", action="store_true", help="only rewrite results tables and plots")
    add_allow_path_option(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from flanmix.study import ablation

    if args.report:
        rows = ablation.rewrite_reports(args.spec, args.out, registry_dirs=args.registry)
        print(f"{args.out}/results.md: {len(rows)} complete cells")
        return 0
    result = ablation.run(args.spec, args.out, registry_dirs=args.registry, only=args.only, dry_run=args.dry_run,
                          threads=args.threads, jobs=args.jobs, engine=args.engine, address=args.address)
    if not args.dry_run:
        print((result["plan"].out / "results.md").read_text(encoding="utf-8"))
    if result["failed"]:
        print(f"flanmix: {len(result['failed'])} cell(s) failed: {', '.join(result['failed'])}; rerun to retry "
              "them", file=sys.stderr)
        return 1
    return 0
