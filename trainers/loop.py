"""One training loop for every stage (SFT, RM, DPO, RRHF, PPO), on `accelerate`.

The protocol (read this first if you write a stage)
---------------------------------------------------
A *stage* is a plain object (subclassing `Stage` below is optional; duck typing is enough). It supplies what is
specific to a method; `train(stage, cfg)` does everything else: optimisation, gradient accumulation, mixed precision,
LR schedule, clipping, eval, logging, checkpoints and exact resume.

Required:
    stage.name: str                                   # "sft", "rm", ... (used in logs and the progress bar)
    stage.model: torch.nn.Module                      # the ONE module the loop optimises (wrap policy+value in one
                                                      # nn.Module for PPO); frozen models stay attributes of the stage
    stage.loss(model, batch) -> (loss, metrics)       # loss: scalar tensor, the MEAN over `stage.count(batch)` units
                                                      # metrics: dict[str, float | 0-d tensor], also means (logged)
    and either
    stage.train_dataset() -> Sequence                 # map-style rows; the loop shuffles (seeded), batches, resumes
    stage.collate(rows: list) -> dict[str, Tensor]    # CPU tensors; the loop moves them to the device
    or
    stage.batches(ctx) -> Iterator[dict]              # the stage makes its own micro-batches (PPO rollouts); the
                                                      # loop pulls grad_accum * 1 micro-batches per optimizer step

Optional (defaults in `Stage`):
    stage.count(batch) -> int | float                 # units the mean in loss() is over (SFT: completion tokens;
                                                      # DPO: pairs). Default: len of the first tensor in the batch.
                                                      # The loop weights micro-batches (and processes) by it, so a
                                                      # step's loss is sum(loss_i * count_i) / sum(count_i) over the
                                                      # whole global batch: packed == unpacked, 2 processes == 1.
    stage.eval_dataset() -> Sequence | None           # eval uses the same collate() and loss() under no_grad
    stage.setup(ctx) -> None                          # called once after accelerator.prepare (move frozen models
                                                      # to ctx.device, build the reference model, ...)
    stage.param_groups(model) -> list[dict] | None    # custom optimizer groups (e.g. value head lr); default: all
                                                      # trainable params, no weight decay on biases/norms
    stage.state_dict() -> dict / stage.load_state_dict(d)   # extra state saved in every checkpoint (PPO buffers,
                                                      # rollout counters); restored BEFORE batches(ctx) is called
    stage.save(ctx, out_dir: Path) -> None            # write the final model; default: save_pretrained of
                                                      # stage.model (+ stage.tokenizer if the stage has one)

`ctx` is a `LoopContext`: ctx.accelerator, ctx.model (the prepared/wrapped model), ctx.unwrapped (the plain module,
use it for generate()), ctx.device, ctx.step (optimizer steps done), ctx.cfg (the LoopConfig), ctx.is_main,
ctx.log(dict) (extra metrics into the JSONL/TensorBoard stream).

Configuration is `LoopConfig` (a dataclass; the YAML layer validates it with pydantic in trainers.config).

Outputs in cfg.output_dir:
    metrics.jsonl          one JSON object per log/eval event ({"step", "loss", "lr", "tokens_per_s", ...})
    tb/                    TensorBoard event files (same scalars)
    checkpoints/step-N/    accelerate state (model, optimizer, scheduler, RNG of every process) + loop_state.json
                           (step, data position, stage state); written to a temp dir and renamed, so a crash or a
                           NaN stop never leaves a half-written "last good" checkpoint
    final/                 the trained model as a transformers folder (stage.save)

Resume: cfg.resume = "auto" (latest complete checkpoint if any) | "never" | PATH. A resumed run reproduces the
uninterrupted run's loss curve exactly (data order is a pure function of seed and position; RNG states restored).

NaN/inf loss: the loop stops with FlanmixError naming the step and the last good checkpoint; it never saves a
checkpoint after a non-finite loss. The finiteness check runs at log steps and before each save (no per-step
device sync).
"""

from __future__ import annotations
