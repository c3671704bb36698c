"""One cell of the grid, for real: build the mixture of its tasks, run SFT with the cell's budget (and optionally a
preference stage after it), then evaluate on the held-out tasks and on the validation rows of its own tasks.

Every step leaves a stamp in the cell folder, so a rerun after an interruption reuses the mixture and the finished
SFT run (SFT itself resumes from its checkpoints).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from flanmix.core.atomic import write_jsonl
from flanmix.core.constants import TARGET_DELIMITER
from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import iter_jsonl
from flanmix.mixture import build
from flanmix.preferences import preference_rows
from flanmix.preferences.generate import start_responses
from flanmix.registry import Registry
from flanmix.study.ablation.grid import Cell, Plan, write_record
from flanmix.study.eval import evaluate
from flanmix.task import Task
from trainers import seq2seq
from trainers.data import read_rows, tokenize_rows
from trainers.models import SEQ2SEQ, load_tokenizer, model_kind
from trainers.packing import pack_greedy
from trainers.sft import train
from trainers.stages import run_stage


def _quiet(message: str) -> None:
    """A log that drops its messages (fake runners and worker processes pass their own)."""


@dataclass
class Context:
    """What a cell runner gets besides the cell."""

    plan: Plan
    cell_dir: Path
    model_dir: Path | None = None              # the initial model for this cell (None in fake runners)
    needs: dict | None = None                  # the budget guard's estimate for this cell
    log: Callable[[str], None] = _quiet


def run_cell(cell: Cell, ctx: Context) -> dict:
    """The real cell runner: build the mixture, SFT (+ preference stage), evaluate held-out and seen tasks."""
    spec = ctx.plan.spec
    assert ctx.model_dir is not None, "run_cell needs the prepared model folder"
    metrics: dict[str, Any] = {"model_params": model_params(ctx.model_dir), "model_dir": str(ctx.model_dir)}
    final = ctx.model_dir
    if cell.count > 0:
        t0 = time.perf_counter()
        mdir = _build_mixture(cell, ctx)
        metrics["build_seconds"] = round(time.perf_counter() - t0, 2)
        final, sft_metrics = _train_sft(cell, ctx, mdir)
        metrics.update(sft_metrics)
        if spec.preference is not None:
            t0 = time.perf_counter()
            final = _preference_stage(cell, ctx, final)
            metrics["preference_seconds"] = round(time.perf_counter() - t0, 2)
    metrics.update(_evaluate(cell, ctx, final))
    if cell.count > 0 and not spec.keep_models:
        _drop_weights(ctx)
    return metrics


# ------------------------------------------------------------------------------------------------ 1. mixture

def mixture_spec(plan: Plan, cell: Cell, rows: int) -> dict:
    """The mixture of one cell: its tasks, `rows` examples, the spec's extra mixture fields and the cell's CoT share."""
    spec: dict[str, Any] = {"name": cell.id, "seed": cell.seed, "size": {"examples": rows},
                            "components": [{"tasks": list(cell.tasks)}]}
    spec.update(plan.spec.mixture)
    if cell.cot is not None:
        spec["cot"] = cell.cot
    if plan.spec.budget.repeat:
        spec.setdefault("dedup", False)  # repeats are intended; dedup would drop them again
    return spec


def limited_registry(registry: Registry, tasks: Sequence[str], k: int) -> Registry:
    """A registry whose tasks keep only their first k templates (non-inverted first), for the template axis."""
    out = []
    for name in tasks:
        task = registry.get(name)
        tset = task.templates
        normal = [t for t in tset.zero_shot if not t.inverted]
        inverted = [t for t in tset.zero_shot if t.inverted]
        zs = (normal + inverted)[:k]
        out.append(Task(task.spec, tset.model_copy(update={"zero_shot": zs, "cot": list(tset.cot)[:k]}),
                        spec_file=task.spec_file, template_file=task.template_file,
                        template_mix_set=task.template_mix_set))
    return Registry(out)


def _build_mixture(cell: Cell, ctx: Context) -> Path:
    """Build the cell's mixture (reused when a previous attempt built the same one); returns its folder."""
    plan, cdir, budget = ctx.plan, ctx.cell_dir, ctx.plan.spec.budget
    needs = ctx.needs or {}
    # 15% + one batch of slack over the guard's estimate (a mean over a few sampled renders).
    rows = int(math.ceil(needs.get("rows", budget.batch_size * (budget.steps or 1)) * 1.15)) + budget.batch_size
    if not budget.repeat:
        rows = min(rows, needs.get("supply_rows", rows))
    mspec = mixture_spec(plan, cell, rows)
    mdir = cdir / "mixture"
    stamp = cdir / "mixture_spec.json"
    if not ((mdir / "manifest.json").is_file() and stamp.is_file() and any(mdir.rglob("*.parquet"))
            and json.loads(stamp.read_text()) == mspec):
        registry = plan.registry if cell.templates is None else limited_registry(plan.registry, cell.tasks,
                                                                                 cell.templates)
        build(mspec, mdir, registry=registry, overwrite=True, progress=False)
        write_record(stamp, mspec)
    return mdir


# ------------------------------------------------------------------------------------------------ 2. training

def _train_sft(cell: Cell, ctx: Context, mdir: Path) -> tuple[Path, dict]:
    """SFT on the mixture with the cell's budget; returns the final model folder and the training metrics."""
    spec, budget, cdir = ctx.plan.spec, ctx.plan.spec.budget, ctx.cell_dir
    # Rows that do not fit max_length are dropped rather than cut (a cut target teaches a wrong answer), unless
    # the spec's train.truncation says otherwise; SFT and this count use the same setting.
    truncation = spec.train.get("truncation", "drop")
    # An encoder-decoder (T5) is tokenized as its SFT tokenizes it and never packed (`trainers.sft`).
    enc_dec = model_kind(ctx.model_dir) == SEQ2SEQ
    tokenize = seq2seq.tokenize_rows if enc_dec else tokenize_rows
    examples, stats = tokenize(load_tokenizer(ctx.model_dir), read_rows(mdir), max_length=budget.max_length,
                               truncation=truncation, source=mdir)
    lengths = [len(e["input_ids"]) + (len(e["labels"]) if enc_dec else 0) for e in examples]
    packed = budget.packing and not enc_dec
    items = len(pack_greedy(lengths, budget.max_length)) if packed else len(lengths)
    tokens_per_item = sum(lengths) / max(1, items)
    if budget.steps is not None:
        steps = budget.steps
    else:
        steps = max(1, round(budget.tokens / (tokens_per_item * budget.batch_size)))
    cfg = {"progress": False, "tensorboard": False, "log_every": max(1, steps // 10), "truncation": truncation,
           **spec.train,
           "model": str(ctx.model_dir), "data": str(mdir), "output_dir": str(cdir / "sft"),
           "max_steps": steps, "batch_size": budget.batch_size, "packing": budget.packing,
           "max_length": budget.max_length, "seed": cell.seed, "resume": "auto"}
    write_record(cdir / "train_config.json", cfg)
    info = _run_sft(cfg, cdir)
    # Tokens seen as the loop counted them; else steps × batch items × mean tokens per item.
    metrics = {"steps": info["steps"],
               "train_tokens": info.get("tokens_seen") or int(info["steps"] * budget.batch_size * tokens_per_item),
               "mixture_rows": stats.rows, "mixture_tokens": sum(lengths),
               "epochs": round(info["steps"] * budget.batch_size / max(1, items), 3),
               "final_loss": info.get("final_loss"), "sft_seconds": info.get("seconds")}
    return Path(info["final_dir"]), metrics


def _run_sft(cfg: dict, cdir: Path) -> dict:
    """Run SFT unless a previous attempt finished it (`sft_done.json` and the final model exist)."""
    sft_dir = Path(cfg["output_dir"])
    done = cdir / "sft_done.json"
    if done.is_file() and (sft_dir / "final" / "config.json").is_file():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    result = train(cfg)
    if not result.final_dir:
        raise FlanmixError("SFT wrote no final model", file=sft_dir)
    last = next((h for h in reversed(result.history) if "loss" in h), {})
    info = {"final_dir": result.final_dir, "steps": result.steps, "final_loss": last.get("loss"),
            "tokens_seen": _tokens_seen(sft_dir / "metrics.jsonl"), "seconds": round(time.perf_counter() - t0, 2)}
    write_record(done, info)
    return info


def _tokens_seen(metrics_file: Path) -> int | None:
    """Tokens the loop trained on: the sum of its per-log-window `tokens` (a resumed run's repeated steps counted
    once)."""
    windows: dict[int, int] = {}
    try:
        for _, rec in iter_jsonl(metrics_file):
            if "loss" in rec and isinstance(rec.get("tokens"), (int, float)) and "step" in rec:
                windows[int(rec["step"])] = int(rec["tokens"])
    except FlanmixError:  # missing or damaged: the caller estimates instead
        return None
    return sum(windows.values()) or None


def _preference_stage(cell: Cell, ctx: Context, model_dir: Path) -> Path:
    """Train the spec's preference stage on verifiable preferences from the cell's tasks; returns its final model."""
    plan, cdir = ctx.plan, ctx.cell_dir
    pref = plan.spec.preference
    assert pref is not None
    kind = "rankings" if pref.stage == "rrhf" else "pairs"
    per_task = max(1, pref.examples // len(cell.tasks))
    pairs = []
    for name in cell.tasks:
        task = plan.registry.get(name)
        for row in task.iter_renders(split="train", template_type="zs_noopt", seed=cell.seed, limit=per_task):
            pairs.append((row["inputs"], row["targets"]))
    # Responses start with the target delimiter, as SFT completions do (see `rows_from_tasks`).
    rows = start_responses(preference_rows(pairs, kind=kind, k=pref.k, seed=cell.seed), TARGET_DELIMITER)
    data = cdir / "preferences.jsonl"
    write_jsonl(data, rows)
    cfg = {"progress": False, "tensorboard": False, **pref.config, "model": str(model_dir), "data": str(data),
           "output_dir": str(cdir / pref.stage), "seed": cell.seed, "resume": "auto"}
    write_record(cdir / f"{pref.stage}_config.json", cfg)
    ctx.log(f"  {pref.stage}: {len(rows)} {kind}")
    result = run_stage(pref.stage, cfg)
    if not result.final_dir:
        raise FlanmixError(f"{pref.stage} wrote no final model", file=cdir / pref.stage)
    return Path(result.final_dir)


def _drop_weights(ctx: Context) -> None:
    """Delete the cell's trained weights and checkpoints (kept only with `keep_models`)."""
    pref = ctx.plan.spec.preference
    for sub in ("sft", pref.stage if pref else None):
        if sub:
            for name in ("final", "checkpoints"):
                shutil.rmtree(ctx.cell_dir / sub / name, ignore_errors=True)
    (ctx.cell_dir / "sft_done.json").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ 3. evaluation

def _evaluate(cell: Cell, ctx: Context, model_dir: Path) -> dict:
    """Held-out and seen-task scores of the cell's final model (reports in `eval_heldout.json`/`eval_seen.json`)."""
    plan, cdir = ctx.plan, ctx.cell_dir
    settings, where = plan.spec.eval, {"registry_dirs": plan.registry_dirs, "threads": plan.spec.threads}
    t0 = time.perf_counter()
    held = evaluate(str(model_dir), plan.heldout_sets(), settings.options(seen=False, **where),
                    out=cdir / "eval_heldout.json")
    metrics = _scores(held, "heldout")
    if settings.seen and cell.tasks:
        seen = evaluate(str(model_dir), list(cell.tasks), settings.options(seen=True, **where),
                        out=cdir / "eval_seen.json")
        metrics.update(_scores(seen, "seen"))
        metrics["seen_task_scores"] = {k: v.get("score") for k, v in seen["tasks"].items()}
    else:
        metrics["seen_score"] = None
    metrics["heldout_task_scores"] = {k: v.get("score") for k, v in held["tasks"].items()}
    metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
    return metrics


def _scores(report: dict, prefix: str) -> dict:
    """`{prefix}_score` (held-out: the cluster macro average; seen: the task macro average) and per-cluster scores."""
    out = {f"{prefix}_score": report["overall"].get("cluster_macro" if prefix == "heldout" else "score")}
    for name, c in report.get("clusters", {}).items():
        out[f"{prefix}:{name}"] = c.get("score")
    return out


def model_params(path: Path) -> int | None:
    """Parameter count of a model folder, from its config (meta device, no weights loaded)."""
    try:
        config = AutoConfig.from_pretrained(str(path))
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a count is a nicety; a model that cannot be built fails later anyway
        return None
