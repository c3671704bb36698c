"""`flanmix eval MODEL --tasks SPEC`: exact match, rank classification and CoT answer extraction on registered
tasks, BBH and MMLU; a table on stdout and optionally a JSON report."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model on tasks, BBH or MMLU (exact match, rank classification, CoT)",
        description="Evaluate a local causal LM. --tasks takes task names, globs ('strings.*'), cluster:NAME, "
                    "bbh:PATH_OR_DIR (BIG-Bench Hard JSON) and mmlu:DIR (MMLU CSVs); repeat it or separate with "
                    "commas. Metrics come from each task's spec; see docs/eval.md.",
    )
    p.add_argument("model", help="model folder (from `flanmix init-model`, `flanmix train` or save_pretrained)")
    p.add_argument("--tasks", action="append", required=True, metavar="SPEC",
                   help="task name | glob | cluster:NAME | bbh:PATH | mmlu:DIR (repeatable, comma-separated)")
    p.add_argument("--split", default="validation", choices=("validation", "train", "test"),
                   help="held-out rows of registered tasks; MMLU val/ (validation) or test/ (test)")
    p.add_argument("--limit", type=int, help="at most N examples per task")
    p.add_argument("--variant", default="zs_opt", choices=("zs_opt", "zs_noopt", "fs_opt", "fs_noopt"),
                   help="template type for registered tasks (default zs_opt; *_opt falls back to *_noopt for tasks "
                        "without options)")
    p.add_argument("--template-idx", type=int, help="use this zero-shot template for every row (default: cycle "
                                                    "through the non-inverted templates)")
    p.add_argument("--seed", type=int, default=0, help="render seed (few-shot exemplars)")
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size (scoring uses 2x)")
    p.add_argument("--max-new-tokens", type=int, help="generation budget (default: longest reference + 8, at "
                                                      "most 64; 256 for CoT)")
    p.add_argument("--bbh-cot", action="store_true", help="BBH with chain-of-thought exemplars and answer extraction")
    p.add_argument("--bbh-shots", type=int, default=3, help="BBH exemplars from cot-prompts/ (default 3)")
    p.add_argument("--mmlu-shots", type=int, default=0, help="MMLU exemplars from dev/ (default 0)")
    p.add_argument("--mmlu-choices", default="letters", choices=("letters", "text"),
                   help="rank the letters A-D (default) or the choice texts")
    p.add_argument("--metrics", help="only these metrics, comma-separated (exact_match, rank_classification, "
                                     "cot_exact_match, contains); default: each task's own")
    p.add_argument("--no-eos", action="store_true", help="rank options without scoring EOS after them")
    p.add_argument("--threads", type=int, help="torch threads (default: 1 for models under 20M parameters)")
    p.add_argument("--samples", type=int, default=3, help="example predictions per task in the JSON (default 3)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--registry", action="append", default=[], metavar="DIR", help="extra task registry folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from flanmix.core.errors import FlanmixError
    from flanmix.eval import _stderr_log, evaluate, format_table

    specs = [s.strip() for group in args.tasks for s in group.split(",") if s.strip()]
    for name, value in (("limit", args.limit), ("batch-size", args.batch_size),
                        ("max-new-tokens", args.max_new_tokens), ("threads", args.threads)):
        if value is not None and value < 1:
            raise FlanmixError(f"--{name} must be at least 1", field=name)
    report = evaluate(args.model, specs, split=args.split, variant=args.variant, limit=args.limit,
                      batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, registry_dirs=args.registry,
                      seed=args.seed, template_idx=args.template_idx, bbh_cot=args.bbh_cot, bbh_shots=args.bbh_shots,
                      mmlu_shots=args.mmlu_shots, mmlu_choices=args.mmlu_choices, include_eos=not args.no_eos,
                      threads=args.threads,
                      metrics=[m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None,
                      samples=args.samples, out=args.out,
                      log=None if args.quiet else _stderr_log)
    print(format_table(report))
    t = report["timing"]
    if not args.quiet:
        _stderr_log(f"done in {t['total_s']:.1f}s" + (f"; results in {args.out}" if args.out else ""))
    return 0
