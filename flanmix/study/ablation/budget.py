"""The budget guard: every trained cell must get its training budget from its own tasks without repeating an
example (unless `budget.repeat`), checked before anything trains."""

from __future__ import annotations

import math
from collections.abc import Sequence

from flanmix.core.constants import TEMPLATE_TYPES
from flanmix.core.errors import FlanmixError
from flanmix.registry import Registry
from flanmix.study.ablation.grid import Cell, Plan
from flanmix.study.ablation.spec import Budget


def estimate_row_tokens(registry: Registry, tasks: Sequence[str], tokenizer, *, seed: int = 0, samples: int = 24,
                        template_types: dict | None = None) -> dict[str, float]:
    """Mean tokens (inputs + targets + BOS/EOS) per rendered training row of each task, from a few seeded renders
    spread over the template types the mixture uses."""
    weights = template_types or {t: 1.0 for t in TEMPLATE_TYPES}
    out = {}
    for name in tasks:
        task = registry.get(name)
        examples = task.examples("train")
        kinds = [k for k in TEMPLATE_TYPES if weights.get(k, 0) > 0 and k in task.variants()] or ["zs_noopt"]
        idx = task.template_indices() or task.template_indices(cot=True)
        cot = not task.template_indices()
        texts = []
        for i in range(min(samples, len(examples))):
            ex = examples[(i * 7919) % len(examples)]
            kind = kinds[i % len(kinds)]
            if kind.startswith("fs") and len(examples) < 2:
                kind = "zs_noopt"
            row = task.render(ex, template_type=kind, template_idx=idx[i % len(idx)], cot=cot, seed=seed)
            texts.append((row["inputs"], row["targets"]))
        lens = [len(tokenizer(a)["input_ids"]) + len(tokenizer(b, add_special_tokens=False)["input_ids"]) + 1
                for a, b in texts]
        out[name] = sum(lens) / max(1, len(lens))
    return out


def _rows_per_item(mean_tokens: float, budget: Budget) -> float:
    """Training rows (examples) one batch item holds: several when packed, one otherwise."""
    if not budget.packing:
        return 1.0
    return max(1.0, math.floor(budget.max_length / max(1.0, min(mean_tokens, budget.max_length))))


def cell_needs(plan: Plan, cell: Cell, row_tokens: dict[str, float]) -> dict:
    """Rows and tokens the cell's budget needs vs what its tasks can supply without repeating an example."""
    b = plan.spec.budget
    mean = sum(row_tokens[t] for t in cell.tasks) / len(cell.tasks)
    supply_rows = sum(len(plan.registry.get(t).examples("train")) for t in cell.tasks)
    if b.tokens is not None:
        rows = math.ceil(b.tokens / mean)
        tokens = b.tokens
    else:
        rows = math.ceil(b.steps * b.batch_size * _rows_per_item(mean, b))
        tokens = int(rows * mean)
    return {"rows": rows, "tokens": tokens, "mean_row_tokens": mean, "supply_rows": supply_rows,
            "supply_tokens": int(supply_rows * mean)}


def check_budget(plan: Plan, tokenizer) -> dict[str, dict]:
    """The budget guard: raises one error listing the cells that cannot get their budget (unless budget.repeat);
    returns each trained cell's needs (`cell_needs`)."""
    trained = [c for c in plan.cells if c.count > 0]
    names = sorted({t for c in trained for t in c.tasks})
    row_tokens = estimate_row_tokens(plan.registry, names, tokenizer,
                                     template_types=plan.spec.mixture.get("template_types"))
    needs = {c.id: cell_needs(plan, c, row_tokens) for c in trained}
    short = [(c, needs[c.id]) for c in trained if needs[c.id]["rows"] > needs[c.id]["supply_rows"]]
    if short and not plan.spec.budget.repeat:
        c, n = min(short, key=lambda x: x[1]["supply_rows"] / x[1]["rows"])
        what = "tokens" if plan.spec.budget.tokens is not None else "steps"
        raise FlanmixError(
            f"{len(short)} cell(s) cannot fit the budget: e.g. {c.id} trains on {len(c.tasks)} task(s) "
            f"({', '.join(c.tasks[:4])}{' ...' if len(c.tasks) > 4 else ''}) with {n['supply_rows']} training rows "
            f"(~{n['supply_tokens']:,} tokens), but the {what} budget needs ~{n['rows']} rows (~{n['tokens']:,} "
            f"tokens)", file=plan.spec_file, field="budget",
            expected="a smaller budget, larger task counts, or budget.repeat: true")
    return needs
