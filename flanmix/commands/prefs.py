"""`flanmix prefs`: make preference files for the RM / DPO / RRHF / PPO stages.

    flanmix prefs generate --tasks 'str_*' cluster:lists --n 200 --kind pairs --out prefs/train.jsonl
    flanmix prefs generate --from rows.jsonl --kind rankings --k 4 --out prefs/rank.jsonl
    flanmix prefs import hh-rlhf shared/data/preference/hh_rlhf/harmless-base_test.jsonl.gz --out prefs/hh.jsonl
    flanmix prefs import pandalm testset-v1.json --out prefs/pandalm.jsonl   (unanimous, non-tie labels)
    flanmix prefs import sharegpt dpo_en_demo.json --out prefs/sharegpt.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flanmix.commands.argtypes import positive_int
from flanmix.core.atomic import check_writable
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prefs", help="generate or import preference data (pairs / rankings)",
                              description="Generate verifiable preferences from bundled tasks, or import "
                                          "third-party preference sets, as JSONL pair/ranking rows.")
    sub = p.add_subparsers(dest="prefs_command", metavar="ACTION")
    sub.required = True

    g = sub.add_parser("generate", help="correct vs perturbed answers of rendered task examples")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--tasks", nargs="+", help="task names, globs or cluster:NAME")
    src.add_argument("--from", dest="from_file",
                     help="JSONL with prompt/answer (or inputs/targets) rows instead of registered tasks")
    g.add_argument("--n", type=positive_int, default=200, help="examples per task (default 200)")
    g.add_argument("--split", choices=["train", "validation"], default="train")
    g.add_argument("--kind", choices=["pairs", "rankings"], default="pairs")
    g.add_argument("--k", type=int, default=4, help="responses per ranking (default 4)")
    g.add_argument("--margin", action="store_true", help="add log(1 + distance) as the pair margin")
    g.add_argument("--edits", choices=["mixed", "words", "chars"], default="mixed",
                   help="how text answers are perturbed (default: a mix of word and character edits)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="output .jsonl")
    g.set_defaults(func=_generate)

    i = sub.add_parser("import", help="convert HH-RLHF / PandaLM / ShareGPT preference files")
    i.add_argument("format", choices=["hh-rlhf", "pandalm", "sharegpt"])
    i.add_argument("src", help="the source file")
    i.add_argument("--vote", choices=["unanimous", "majority"], default="unanimous",
                   help="PandaLM: which human-label agreement makes a pair (default unanimous)")
    i.add_argument("--out", required=True, help="output .jsonl")
    i.set_defaults(func=_import)


def _read_examples(path: str) -> list[tuple[str, str]]:
    """(prompt, answer) of every row of a JSONL file with prompt/answer (or inputs/targets) fields."""
    out = []
    for n, row in iter_jsonl(path):
        prompt = row.get("prompt", row.get("inputs"))
        answer = row.get("answer", row.get("targets", row.get("completion")))
        if not isinstance(prompt, str) or not isinstance(answer, str) or not answer.strip():
            raise FlanmixError("row needs a prompt (or inputs) and a non-empty answer (or targets)", file=path,
                               line=n)
        out.append((prompt, answer))
    return out


def _generate(args: argparse.Namespace) -> int:
    from flanmix.preferences import preference_rows, rows_from_tasks, write_rows

    if args.n < 1 or args.k < 2:
        raise FlanmixError("--n must be >= 1 and --k >= 2", field="n")
    check_writable(args.out, field="--out")  # before rendering, not after
    if args.tasks:
        rows = rows_from_tasks(args.tasks, n=args.n, split=args.split, kind=args.kind, k=args.k, seed=args.seed,
                               margin=args.margin, edits=args.edits)
    else:
        rows = preference_rows(_read_examples(args.from_file), kind=args.kind, k=args.k, seed=args.seed,
                               margin=args.margin, edits=args.edits)
    if not rows:
        raise FlanmixError("no preference rows could be made", field="tasks")
    n = write_rows(rows, args.out)
    print(f"wrote {n} {args.kind} to {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from flanmix.preferences import IMPORTERS, pandalm_rows, write_rows

    src = Path(args.src)
    if not src.is_file():
        raise FlanmixError("source file not found", file=src)
    check_writable(args.out, field="--out")
    try:
        if args.format == "pandalm":
            rows, dropped = pandalm_rows(src, vote=args.vote)
        else:
            rows, dropped = IMPORTERS[args.format](src)
    except FlanmixError as err:  # the importer's own check of the file's shape
        raise FlanmixError(f"not a {args.format} file: {err.message}", file=src, line=err.line) from None
    except (KeyError, TypeError, ValueError, OSError) as err:  # a file of another shape
        raise FlanmixError(f"not a {args.format} file ({type(err).__name__}: {err})", file=src) from None
    if not rows:
        raise FlanmixError(f"no usable {args.format} rows", file=src)
    n = write_rows(rows, args.out)
    print(f"wrote {n} pairs to {args.out} ({dropped} rows dropped: tied, identical or empty)")
    return 0
