"""Running an evaluation: build the eval sets, score them with a model (or any `Scorer`), aggregate the metrics
and write the results JSON."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flanmix.core.atomic import check_writable, write_json
from flanmix.study.eval.items import (
    DEFAULT_COT_MAX_NEW_TOKENS,
    DEFAULT_MAX_NEW_TOKENS,
    GENERATIVE,
    LM_EVAL_SOURCES,
    EvalSet,
    Scorer,
    lm_eval_request,
)
from flanmix.study.eval.metrics import aggregate
from flanmix.study.eval.options import EvalOptions
from flanmix.study.eval.suites import build_eval_sets
from trainers.models import check_model_dir

Log = Callable[[str], None]


def evaluate(model: Any, tasks: Sequence[str] | Sequence[EvalSet], options: EvalOptions | None = None, *,
             out: str | Path | None = None, log: Log | None = None) -> dict:
    """Evaluate a model on tasks; returns (and with `out` writes as JSON) the results dict.

    `model` is a model folder, a `(model, tokenizer)` pair already in memory, or a `Scorer`. `tasks` are specs as
    for `flanmix eval --tasks` (names, globs, `cluster:NAME`, `bbh:PATH_OR_DIR`, `mmlu:DIR`, `bigbench:DIR`), or
    `EvalSet`s from `build_eval_sets`, to render once and evaluate many models. `options` default to
    `EvalOptions()`; they are recorded in the results as `settings`.
    """
    options = options or EvalOptions()
    t0 = time.perf_counter()
    model_desc = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if out is not None:
        check_writable(out, field="out")  # an unwritable --out fails now, not after the whole evaluation
    if isinstance(model, (str, Path)):
        from trainers.adapters import is_adapter_dir  # imports torch: only when a model folder is evaluated

        if not is_adapter_dir(model):  # an adapter folder is checked when its base loads
            check_model_dir(model)  # fail on a bad folder before the (slower) task rendering
    if tasks and all(isinstance(t, EvalSet) for t in tasks):
        sets = list(tasks)  # built once by the caller (an ablation grid evaluates many models on one set)
    else:
        sets = build_eval_sets(tasks, options)
    t_build = time.perf_counter() - t0
    scorer = _scorer(model, options)
    t1 = time.perf_counter()
    results = run_eval_sets(sets, scorer, max_new_tokens=options.max_new_tokens, samples=options.samples, log=log,
                            include_eos=options.include_eos, full_samples=options.full_samples)
    timing = {"build_s": round(t_build, 3), "score_s": round(time.perf_counter() - t1, 3),
              "total_s": round(time.perf_counter() - t0, 3)}
    if hasattr(scorer, "timing"):
        timing.update(scorer.timing())
    report = {"model": model_desc, "tasks_spec": [t.name if isinstance(t, EvalSet) else t for t in tasks],
              "settings": options.model_dump(mode="json"), **results, "timing": timing}
    if out is not None:
        write_json(out, report)
    return report


def _scorer(model: Any, options: EvalOptions) -> Scorer:
    """A `ModelScorer` for a model folder or a (model, tokenizer) pair; any other object is used as it is."""
    if isinstance(model, (str, Path)):
        model, tokenizer = model, None
    elif isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    else:
        return model
    # torch is loaded only when a real model is scored: an injected Scorer needs none.
    from flanmix.study.eval.scorer import ModelScorer

    return ModelScorer(model, tokenizer, batch_size=options.batch_size, include_eos=options.include_eos is not False,
                       threads=options.threads)


def _budgets(sets: list[EvalSet], scorer: Scorer, max_new_tokens: int | None) -> None:
    """Fill each set's generation budget (new tokens) for its direct and its CoT items."""
    for s in sets:
        for cot in (False, True):
            texts = [it.budget_text or it.reference for it in s.items
                     if it.cot == cot and set(it.metrics) & set(GENERATIVE)]
            if not texts:
                continue
            if max_new_tokens is not None:
                s.max_new_tokens[cot] = max_new_tokens
            elif cot and not any(it.budget_text for it in s.items if it.cot):
                s.max_new_tokens[cot] = DEFAULT_COT_MAX_NEW_TOKENS  # BBH: only the final answer is known
            else:
                # Enough for the longest reference (for CoT: the rendered rationale + answer) plus slack; an
                # untrained model would otherwise babble up to the cap and dominate the run time.
                cap = DEFAULT_COT_MAX_NEW_TOKENS if cot else DEFAULT_MAX_NEW_TOKENS
                s.max_new_tokens[cot] = min(cap, scorer.count_tokens(max(texts, key=len)) + (16 if cot else 8))


def run_eval_sets(sets: list[EvalSet], scorer: Scorer, *, max_new_tokens: int | None = None,
                  samples: int = 3, log: Log | None = None, include_eos: bool | None = None,
                  full_samples: bool = False) -> dict:
    """Score every item of `sets` with `scorer` (all tasks batched together) and aggregate the metrics.

    Ranked options of MMLU, BBH and BIG-bench are scored as lm-evaluation-harness does (`LM_EVAL_SOURCES`): without
    EOS unless `include_eos` is True, with a prompt's trailing whitespace moved onto the option; flanmix's own
    tasks with EOS unless `include_eos` is False."""
    _budgets(sets, scorer, max_new_tokens)
    gen_groups: dict[int, list[tuple[int, int]]] = {}
    rank_refs: list[tuple[int, int]] = []
    for si, s in enumerate(sets):
        for ii, item in enumerate(s.items):
            if set(item.metrics) & set(GENERATIVE):
                gen_groups.setdefault(s.max_new_tokens[item.cot], []).append((si, ii))
            if "rank_classification" in item.metrics and item.options:
                rank_refs.append((si, ii))
    generations: dict[tuple[int, int], str] = {}
    for budget, refs in sorted(gen_groups.items()):
        if log:
            log(f"generating {len(refs)} answers (up to {budget} new tokens)")
        items = [sets[si].items[ii] for si, ii in refs]
        texts = scorer.generate([it.prompt for it in items], max_new_tokens=budget, stop=[it.stop for it in items])
        generations.update(zip(refs, texts))
    scores: dict[tuple[int, int], list[tuple[float, int]]] = {}
    if rank_refs and log:
        log(f"ranking options of {len(rank_refs)} prompts")
    for lm_eval in (False, True):
        refs = [(si, ii) for si, ii in rank_refs if (sets[si].source in LM_EVAL_SOURCES) == lm_eval]
        if not refs:
            continue
        items = [sets[si].items[ii] for si, ii in refs]
        prompts, options = [it.prompt for it in items], [it.options for it in items]
        if lm_eval:
            pairs = [[lm_eval_request(it.prompt, o) for o in it.options] for it in items]
            prompts, options = [row[0][0] for row in pairs], [[c for _, c in row] for row in pairs]
        eos = include_eos if include_eos is not None else not lm_eval
        scores.update(zip(refs, scorer.rank(prompts, options, include_eos=eos)))
    return aggregate(sets, generations, scores, samples=samples, full_samples=full_samples)
