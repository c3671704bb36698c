"""One training loop for every stage (SFT, RM, DPO, RRHF, PPO), on `accelerate`.

`train(stage, settings)` optimises `stage.model` with `stage.loss` (the protocol: `trainers.protocol.Stage`) as the
`LoopSettings` say. Its parts live beside it: `runtime` (threads, environment, accelerator), `optim` (AdamW and the
schedule), `batching` (row order, micro-batches, data position), `metrics` (JSONL/TensorBoard, log windows, the
NaN stop) and `checkpoint` (save, resume, final model).

Outputs in settings.output_dir:
    metrics.jsonl          one JSON object per log/eval event ({"step", "loss", "lr", "tokens_per_s", ...})
    tb/                    TensorBoard event files (same scalars)
    checkpoints/step-N/    complete checkpoints (see trainers.checkpoint)
    final/                 the trained model as a transformers folder (stage.save)

Resume: resume = "auto" (latest complete checkpoint if any) | "never" | PATH. A resumed run reproduces the
uninterrupted run's loss curve exactly (data order is a pure function of seed and position; RNG states restored);
metrics.jsonl is cut back to the checkpoint's step and TensorBoard purges the later steps, so no step repeats.

NaN/inf loss: the loop stops with FlanmixError naming the step and the last good checkpoint; it never saves a
checkpoint after a non-finite loss. The check runs at log steps and before each save (no per-step device sync).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from trainers.batching import StepBatches, num_tokens, to_device, total_steps
from trainers.checkpoint import Checkpointer, StageState, checkpoints, save_final
from trainers.config import LoopSettings
from trainers.metrics import MetricsLog, NonFiniteGuard, StepWindow, progress_bar
from trainers.optim import adamw, lr_scheduler, param_groups
from trainers.protocol import LoopContext, Stage, TrainResult
from trainers.runtime import enable_gradient_checkpointing, make_accelerator, process_settings

__all__ = ["LoopContext", "Stage", "TrainResult", "checkpoints", "train"]


def train(stage: Stage, cfg: LoopSettings) -> TrainResult:
    """Optimise `stage.model` with `stage.loss` as configured by `cfg` (see the module docstring)."""
    with process_settings(cfg):
        accelerator = make_accelerator(cfg)
        set_seed(cfg.seed)
        out = Path(cfg.output_dir)
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)

        # -- model, optimizer, schedule
        model = stage.model
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        optimizer = adamw(stage.param_groups(model) or param_groups(model, cfg.weight_decay), cfg)
        dataset = stage.train_dataset()  # None: the stage makes its own micro-batches
        steps_total = total_steps(cfg, dataset, accelerator.num_processes)
        scheduler = lr_scheduler(optimizer, cfg, steps_total)
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
        if stage.state_dict() is not None:
            accelerator.register_for_checkpointing(StageState(stage))

        with MetricsLog(out, stage.name, enabled=accelerator.is_main_process, tensorboard=cfg.tensorboard,
                        accelerator=accelerator, project=cfg.project, config=cfg.loop_fields()) as log:
            ctx = LoopContext(accelerator=accelerator, model=model, unwrapped=accelerator.unwrap_model(model),
                              cfg=cfg, log=log.write)
            guard = NonFiniteGuard(accelerator.device)
            ckpt = Checkpointer(accelerator, cfg, log, guard, steps_total)
            step, position = ckpt.resume()
            finished = step >= steps_total and ckpt.last is not None  # resumed from the final checkpoint
            log.start(step)  # drops what a crash left after the checkpoint: logged steps stay strictly increasing
            ctx.step = step
            stage.setup(ctx)
            data = StepBatches(stage, ctx, dataset, position)
            eval_data = stage.eval_dataset()
            bar = progress_bar(stage.name, steps_total, step, accelerator.is_main_process and cfg.progress)
            window = StepWindow(accelerator.device)

            # -- the loop
            while step < steps_total:
                step_loss = optimizer_step(stage, ctx, optimizer, data.next_step(), window)
                scheduler.step()
                step += 1
                guard.observe(step_loss, step)
                window.end_step(step_loss)
                ctx.step = step
                bar.update(1)
                if step % cfg.log_every == 0 or step == steps_total:
                    guard.check(accelerator, log, ckpt.last)
                    record = window.record(accelerator, step, scheduler.get_last_lr()[0], data.epoch)
                    log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                if cfg.eval_every and step % cfg.eval_every == 0 and step < steps_total:
                    run_eval(stage, ctx, eval_data, log, bar)
                if cfg.save_every and step % cfg.save_every == 0 and step < steps_total:
                    ckpt.save(step, data.position)

            # -- the end: eval, last checkpoint, final model. A rerun of a finished run resumes from its last
            # checkpoint, which is written after the final eval: that eval is logged already, so it is not repeated.
            bar.close()
            guard.check(accelerator, log, ckpt.last)
            if not finished:
                run_eval(stage, ctx, eval_data, log, bar)
                ckpt.save(step, data.position)
            final_dir = out / "final" if cfg.save_final else None
            if final_dir is not None:
                save_final(stage, ctx, final_dir)
        accelerator.wait_for_everyone()
        accelerator.end_training()
    return TrainResult(steps=step, history=log.history, final_dir=str(final_dir) if final_dir else None,
                       last_checkpoint=str(ckpt.last) if ckpt.last else None)


def optimizer_step(stage: Stage, ctx: LoopContext, optimizer: torch.optim.Optimizer, micro: list[dict],
                   window: StepWindow) -> torch.Tensor:
    """Forward/backward over this process's micro-batches of one step, then the optimizer step; returns the step's
    loss (a device tensor: the count-weighted mean over the whole global batch)."""
    acc, device, cfg = ctx.accelerator, ctx.device, ctx.cfg
    gas, world = cfg.grad_accum, acc.num_processes
    counts = [float(stage.count(b)) for b in micro]
    if world > 1:
        total_count = acc.reduce(torch.tensor(sum(counts), device=device), "sum")
    else:
        total_count = sum(counts) or 1.0  # a Python float: no tensor op, no host-device copy
    # loss_i * count_i / W is this micro-batch's share of the global mean; accelerate divides by gas and the
    # gradient all-reduce averages over processes, so both are multiplied back.
    scales = [c * gas * world / total_count for c in counts]
    step_loss = torch.zeros((), device=device)
    for batch, scale in zip(micro, scales):
        window.tokens += num_tokens(batch)
        batch = to_device(batch, device)
        with acc.accumulate(ctx.model):
            # under the accelerator's autocast: stages that call a model's trunk directly (reading hidden states)
            # bypass the autocast accelerate wraps around the model's own forward
            with acc.autocast():
                loss, metrics = stage.loss(ctx.model, batch)
            acc.backward(loss * scale)
            share = scale / (gas * world)
            step_loss += loss.detach().float() * share
            window.add_metrics(metrics, share)
            if acc.sync_gradients:
                window.grad_norm = None
                if cfg.max_grad_norm:
                    window.grad_norm = acc.clip_grad_norm_(ctx.model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return step_loss


def run_eval(stage: Stage, ctx: LoopContext, eval_data: Sequence | None, log: MetricsLog, bar: Any) -> None:
    """Log the eval loss on `eval_data` (count-weighted over all processes) and `stage.evaluate(ctx)`, if either
    exists."""
    model = ctx.model
    model.eval()
    record: dict[str, Any] = {"step": ctx.step}
    if eval_data:
        record["eval_loss"] = eval_loss(stage, ctx, eval_data)
    extra = stage.evaluate(ctx)
    model.train()
    if not eval_data and extra is None:
        return
    record.update(extra or {})
    log.write(record)
    bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, float)})


def eval_loss(stage: Stage, ctx: LoopContext, eval_data: Sequence) -> float:
    """Mean of `stage.loss` over `eval_data` (weighted by `stage.count`), each process taking every world-th batch."""
    acc, cfg, device = ctx.accelerator, ctx.cfg, ctx.device
    world, rank = acc.num_processes, acc.process_index
    size = cfg.eval_batch_size or cfg.batch_size
    total = torch.zeros((), device=device)
    weight = torch.zeros((), device=device)
    with torch.no_grad():
        for start in list(range(0, len(eval_data), size))[rank::world]:
            batch = stage.collate([eval_data[i] for i in range(start, min(start + size, len(eval_data)))])
            count = float(stage.count(batch))
            loss, _ = stage.loss(ctx.model, to_device(batch, device))
            total += loss.detach().float() * count
            weight += count
    if world > 1:
        total, weight = acc.reduce(total, "sum"), acc.reduce(weight, "sum")
    return float(total / weight.clamp_min(1e-12))
