"""`flanmix eval MODEL --tasks SPEC`: exact match, rank classification and CoT answer extraction on registered
tasks, BBH, MMLU and BIG-bench; a table on stdout and optionally a JSON report."""

from __future__ import annotations

import argparse
import sys

from flanmix.commands.argtypes import non_negative_int, positive_int
from flanmix.commands.tasks import add_allow_path_option

# Flags that set an EvalOptions field have no argparse default (SUPPRESS): EvalOptions' own defaults apply, and
# only the flags given reach it.
_UNSET = argparse.SUPPRESS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on tasks, BBH or MMLU (exact match, rank classification, CoT)",
        description="Evaluate a local causal LM. --tasks takes task names, globs ('strings.*'), cluster:NAME, "
                    "bbh:PATH_OR_DIR (BIG-Bench Hard JSON), mmlu:DIR (MMLU CSVs) and bigbench:DIR (BIG-bench "
                    "task.json); repeat it or separate with commas. Metrics come from each task's spec; see "
                    "docs/eval.md.",
    )
    p.add_argument("model", help="model folder (from `flanmix init-model`, `flanmix train` or save_pretrained)")
    p.add_argument("--tasks", action="append", required=True, metavar="SPEC",
                   help="task name | glob | cluster:NAME | bbh:PATH | mmlu:DIR | bigbench:DIR (repeatable, "
                        "comma-separated)")
    p.add_argument("--split", default=_UNSET, choices=("validation", "train", "test"),
                   help="held-out rows of registered tasks; MMLU val/ (validation, the default) or test/ (test)")
    p.add_argument("--limit", type=positive_int, default=_UNSET, help="at most N examples per task")
    p.add_argument("--variant", default=_UNSET, choices=("zs_opt", "zs_noopt", "fs_opt", "fs_noopt"),
                   help="template type for registered tasks (default zs_opt; *_opt falls back to *_noopt for tasks "
                        "without options)")
    p.add_argument("--template-idx", type=non_negative_int, default=_UNSET,
                   help="use this zero-shot template for every row (default: cycle through the non-inverted "
                        "templates)")
    p.add_argument("--seed", type=int, default=_UNSET, help="render seed (few-shot exemplars; default 0)")
    p.add_argument("--batch-size", type=positive_int, default=_UNSET, help="generation batch size (default 32; scoring "
                                                                   "uses 2x)")
    p.add_argument("--max-new-tokens", type=positive_int, default=_UNSET,
                   help="generation budget (default: longest reference + 8, at most 64; 256 for CoT)")
    p.add_argument("--bbh-cot", action="store_true", default=_UNSET,
                   help="BBH with chain-of-thought exemplars and answer extraction")
    p.add_argument("--bbh-shots", type=non_negative_int, default=_UNSET,
                   help="BBH exemplars from cot-prompts/ (default 3)")
    p.add_argument("--mmlu-shots", type=non_negative_int, default=_UNSET, help="MMLU exemplars from dev/ (default 0)")
    p.add_argument("--mmlu-choices", default=_UNSET, choices=("letters", "text"),
                   help="rank the letters A-D (default) or the choice texts")
    p.add_argument("--metrics", type=_names, default=_UNSET,
                   help="only these metrics, comma-separated (exact_match, rank_classification, cot_exact_match, "
                        "contains); default: each task's own")
    p.add_argument("--no-eos", dest="include_eos", action="store_false", default=_UNSET,
                   help="rank options without scoring EOS after them (the default for MMLU, BBH and BIG-bench)")
    p.add_argument("--eos", dest="include_eos", action="store_true", default=_UNSET,
                   help="score EOS after every ranked option (the default for flanmix's own tasks)")
    p.add_argument("--threads", type=positive_int, default=_UNSET,
                   help="torch threads (default: 1 for models under 20M parameters)")
    p.add_argument("--samples", type=non_negative_int, default=_UNSET,
                   help="example predictions per task in the JSON (default 3)")
    p.add_argument("--registry", dest="registry_dirs", action="append", default=_UNSET, metavar="DIR",
                   help="extra task registry folder")
    p.add_argument("--full-samples", action="store_true", default=_UNSET,
                   help="every item in the JSON, with its whole prompt and unrounded log-probs")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_allow_path_option(p)
    p.set_defaults(func=_run)


def _names(text: str) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] or None


def _log(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from flanmix.core.yamlio import validate_mapping
    from flanmix.study.eval import EvalOptions, evaluate, format_table

    specs = [s.strip() for group in args.tasks for s in group.split(",") if s.strip()]
    options = validate_mapping({k: v for k, v in vars(args).items() if k in EvalOptions.model_fields}, EvalOptions)
    report = evaluate(args.model, specs, options, out=args.out, log=None if args.quiet else _log)
    print(format_table(report))
    if not args.quiet:
        _log(f"done in {report['timing']['total_s']:.1f}s" + (f"; results in {args.out}" if args.out else ""))
    return 0
