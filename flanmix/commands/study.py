"""`flanmix study`: studies that train and compare several models.

    flanmix study frontier configs/frontier/demo.yaml --out runs/frontier           # run; a rerun resumes
    flanmix study frontier configs/frontier/demo.yaml --out runs/frontier --report  # rewrite tables and plots
    flanmix study frontier configs/frontier/demo.yaml --out runs/frontier --engine ray --address auto
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="studies over several trained models (the reward-KL frontier)",
                              description="Studies that train and compare several models.")
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    f = studies.add_parser(
        "frontier",
        help="reward vs KL of PPO, DPO, IPO and RRHF on a task with a known reward",
        description="From one SFT model, train each method of FRONTIER.yaml at several values of its knob, "
                    "measure the true reward and the KL to the SFT model at several checkpoints on held-out "
                    "prompts, and write results.csv/.jsonl/.md, frontier.png and winrate.png to --out. "
                    "Complete runs are skipped on rerun.")
    f.add_argument("spec", metavar="FRONTIER.yaml", help="the frontier spec (see docs/frontier.md)")
    f.add_argument("--out", required=True, help="study folder (created; reused to resume)")
    f.add_argument("--only", metavar="GLOB", help="run only the runs whose id matches (e.g. 'dpo-*')")
    f.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (overrides the spec)")
    f.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: every run is a Ray task (after the shared SFT on this machine)")
    f.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: the cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, "
                        "else a local cluster)")
    f.add_argument("--report", action="store_true", help="only rewrite results tables and plots")
    f.set_defaults(func=_frontier)

    def show_help(args: argparse.Namespace) -> int:  # `flanmix study` without a study
        p.print_help()
        return 2

    p.set_defaults(func=show_help)


def _frontier(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flanmix.study import frontier

    if args.report:
        spec, _ = frontier.load_spec(args.spec)
        rows = frontier.write_reports(spec, args.out)
        print(f"{args.out}/results.md: {len(rows)} runs")
        return 0
    frontier.run(args.spec, args.out, only=args.only, threads=args.threads, engine=args.engine,
                 address=args.address)
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"))
    return 0
