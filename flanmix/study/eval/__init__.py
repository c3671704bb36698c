"""Evaluation: eval sets from registered tasks, BIG-Bench Hard, MMLU and BIG-bench; scored by a model; metrics.

    items       EvalItem / EvalSet (what is scored) and the Scorer interface (what scores it)
    options     EvalOptions: every setting of a run, one object for the CLI, ablations and the results JSON
    metrics     answer normalisation, CoT answer extraction, per-item metrics, macro averages
    benchmarks  BBH, MMLU and BIG-bench loaders
    suites      registered tasks and `build_eval_sets` (resolves `--tasks` specs)
    scorer      the torch part: model loading, greedy generation with a KV cache, rank classification
    runner      `evaluate(model, tasks, options)`: build, score, aggregate, write the results JSON
    report      the plain-text table

Only `scorer` imports torch; the names below do not.
"""

from flanmix.study.eval.items import EvalItem, EvalSet, Scorer
from flanmix.study.eval.metrics import aggregate, answers_match, extract_answer, item_metrics, normalize
from flanmix.study.eval.options import EvalOptions
from flanmix.study.eval.report import format_table
from flanmix.study.eval.runner import evaluate, run_eval_sets
from flanmix.study.eval.suites import build_eval_sets, task_eval_set

__all__ = ["EvalItem", "EvalOptions", "EvalSet", "Scorer", "aggregate", "answers_match", "build_eval_sets",
           "evaluate", "extract_answer", "format_table", "item_metrics", "normalize", "run_eval_sets",
           "task_eval_set"]
