"""Scaling ablations: held-out performance over a grid of task count × model size (× templates per task × CoT
share) × seeds, as in Flan 2021 (Wei et al., §4.1-4.2) and the Flan 2022 scaling studies (Longpre et al.).

    flanmix ablate ablations/demo.yaml --out runs/ablate

A *cell* is one point of the grid at one seed. For each cell the runner builds a mixture of the cell's training
tasks, runs SFT on it (optionally a preference stage after it), and evaluates the result on the held-out clusters —
which no training subset touches — and on the validation rows of the cell's own (seen) tasks. Every cell gets the
same training budget (optimizer steps or tokens; both are recorded).

    spec     the YAML schema and loader (pass-through sections checked against their owners' schemas)
    grid     nested task subsets, cells and the plan, cell folders and their hashes
    budget   the budget guard (every cell gets its budget without repeating examples)
    cell     one real cell: mixture, SFT (+ preference stage), evaluation
    runner   run / resume a grid, in this process or in worker processes
    report   results.csv / .jsonl / .md and the plots
"""

from flanmix.study.ablation.budget import cell_needs, check_budget, estimate_row_tokens
from flanmix.study.ablation.cell import Context, limited_registry, mixture_spec, run_cell
from flanmix.study.ablation.grid import Cell, Plan, load_plan, make_plan, nested_subsets, read_result, seeded_order
from flanmix.study.ablation.report import BASE_COLUMNS, aggregate, markdown_table, rewrite_reports, write_reports
from flanmix.study.ablation.runner import prepare_models, run
from flanmix.study.ablation.spec import AblationSpec, load_spec

__all__ = ["BASE_COLUMNS", "AblationSpec", "Cell", "Context", "Plan", "aggregate", "cell_needs", "check_budget",
           "estimate_row_tokens", "limited_registry", "load_plan", "load_spec", "make_plan", "markdown_table",
           "mixture_spec", "nested_subsets", "prepare_models", "read_result", "rewrite_reports", "run", "run_cell",
           "seeded_order", "write_reports"]
