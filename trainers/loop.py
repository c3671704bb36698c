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
                                                      # stage.model (+ stage.tokenizer if the stage has one).
                                                      # Called on EVERY process (ZeRO-3 must gather weights
                                                      # collectively): write files only if ctx.is_main; use
                                                      # ctx.accelerator.get_state_dict(ctx.model) for weights
    stage.lengths() -> Sequence[int]                  # row lengths; rows of similar length share micro-batches
    stage.evaluate(ctx) -> dict                       # extra eval metrics (e.g. generation exact match), at each
                                                      # eval point, called on every process

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

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from flanmix.core.errors import FlanmixError

# --------------------------------------------------------------------------------------------------- config / ctx


@dataclass
class LoopConfig:
    """Everything the loop needs besides the stage. Sizes are per process; the global batch is
    batch_size * grad_accum * num_processes rows."""

    output_dir: str
    batch_size: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None          # optimizer steps; overrides epochs
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    schedule: str = "cosine"              # cosine | linear | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1             # cosine/linear decay down to lr * min_lr_ratio
    max_grad_norm: float | None = 1.0     # None or 0: no clipping
    mixed_precision: str = "auto"         # auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16
    gradient_checkpointing: bool = False
    group_by_length: bool = False         # steps of similar-length rows (needs stage.lengths()); less padding
    eval_every: int = 0                   # steps; 0: only at the end (if the stage has eval data)
    eval_batch_size: int | None = None
    save_every: int = 0                   # steps; 0: only the final checkpoint
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    resume: str = "auto"                  # auto | never | path to a checkpoint folder
    progress: bool = True
    tensorboard: bool = True
    deepspeed: str | dict | None = None   # DeepSpeed config (file or dict); also picked up from `accelerate launch`
    save_final: bool = True
    threads: int | None = None            # torch CPU threads for this process (None: torch's default)


@dataclass
class LoopContext:
    """What the loop hands to stage hooks."""

    accelerator: Any
    model: torch.nn.Module
    unwrapped: torch.nn.Module
    cfg: LoopConfig
    step: int = 0
    log: Callable[[dict], None] = lambda record: None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class TrainResult:
    steps: int
    history: list[dict]
    final_dir: str | None
    last_checkpoint: str | None


class Stage:
    """Optional base class with the protocol's defaults. Subclasses set name/model and implement loss() plus
    train_dataset()+collate() or batches()."""

    name = "stage"
    model: torch.nn.Module
    tokenizer: Any = None

    def loss(self, model, batch) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def count(self, batch) -> float:
        return default_count(batch)

    def eval_dataset(self):
        return None

    def setup(self, ctx: LoopContext) -> None:
        pass


def default_count(batch) -> float:
    for v in batch.values():
        if isinstance(v, torch.Tensor):
            return v.shape[0]
    raise ValueError("batch has no tensor to count rows from")


# -------------------------------------------------------------------------------------------------------- helpers


def lr_lambda(schedule: str, warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step `step` (0-based): linear warm-up, then decay."""
    if schedule not in ("cosine", "linear", "constant"):
        raise FlanmixError(f"unknown schedule {schedule!r}", field="schedule", expected="cosine | linear | constant")

    def f(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - (1.0 - min_ratio) * progress
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices only (not biases, norms, or 1-d params)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class IndexStream:
    """Row indices of a map-style dataset as an endless stream of seeded per-epoch permutations.

    The rows of global step s are positions [s*G, (s+1)*G): a pure function of (seed, position), so resuming only
    needs the position. With `lengths` and `group` (= G), each epoch's permutation is length-grouped: it is cut
    into windows of GROUP_WINDOW steps, each window is sorted by length and cut into steps, and the steps of a
    window are shuffled, so a step holds rows of similar length (little padding) while the epoch stays random.
    """

    GROUP_WINDOW = 32

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, group: int = 0):
        self.n, self.seed = n, seed
        self.lengths, self.group = lengths, group
        self._epoch, self._perm = -1, None

    def perm(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.lengths is not None and self.group > 0:
                perm = self._grouped(perm, g)
            self._epoch, self._perm = epoch, perm
        return self._perm

    def _grouped(self, perm: list[int], g: torch.Generator) -> list[int]:
        out: list[int] = []
        window = self.group * self.GROUP_WINDOW
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start:start + window], key=lambda i: -self.lengths[i])
            steps = [chunk[k:k + self.group] for k in range(0, len(chunk), self.group)]
            for j in torch.randperm(len(steps), generator=g).tolist():
                out.extend(steps[j])
        return out

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for p in range(start, start + count):
            out.append(self.perm(p // self.n)[p % self.n])
        return out


def _adamw(groups: list[dict], cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW, fused where torch has a fused kernel for the parameters' device (CPU and CUDA): the per-parameter
    Python loop of the default CPU implementation costs about as much as a tiny model's backward pass."""
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    devices = {p.device.type for g in groups for p in g["params"]}
    dtypes = {p.dtype for g in groups for p in g["params"]}
    if devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.float16, torch.bfloat16}:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # older torch without a fused kernel for this device
            pass
    return torch.optim.AdamW(groups, **kwargs)


def _resolve_mixed_precision(mode: str) -> str:
    if mode not in ("auto", "no", "bf16", "fp16"):
        raise FlanmixError(f"unknown mixed_precision {mode!r}", field="mixed_precision",
                           expected="auto | no | bf16 | fp16")
    if mode != "auto":
        return mode
    # bf16 autocast on CPU is slower and larger than fp32 (measured), so auto means bf16 only on a GPU.
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _make_accelerator(cfg: LoopConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DeepSpeedPlugin

    # Several runs in one process (tests, pipelines) must not inherit the previous run's accumulation settings.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    kwargs: dict[str, Any] = {}
    ds = cfg.deepspeed
    if ds is not None:
        if isinstance(ds, (str, Path)):
            p = Path(ds)
            if not p.exists():
                raise FlanmixError("DeepSpeed config not found", file=p, field="deepspeed")
            ds = json.loads(p.read_text())
        ds = dict(ds)
        ds.setdefault("gradient_accumulation_steps", cfg.grad_accum)
        ds.setdefault("train_micro_batch_size_per_gpu", cfg.batch_size)
        if cfg.max_grad_norm:
            ds.setdefault("gradient_clipping", cfg.max_grad_norm)
        for key in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu", "gradient_clipping"):
            if ds.get(key) == "auto":
                ds[key] = {"gradient_accumulation_steps": cfg.grad_accum,
                           "train_micro_batch_size_per_gpu": cfg.batch_size,
                           "gradient_clipping": cfg.max_grad_norm or 0.0}[key]
        ds.pop("train_batch_size", None)
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        # accelerate reads this flag when it sets up the process group (before it looks at the plugin)
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    use_ds = ds is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if use_ds and not torch.cuda.is_available():
        from accelerate.utils import InitProcessGroupKwargs

        # On CPU accelerate finds no backend for DeepSpeed by itself and would silently run each process alone.
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    # Without cpu=True accelerate ignores a multi-process launch on a machine without GPUs (each process would
    # think it is alone); with it, processes join a gloo group. DeepSpeed is the exception: accelerate only
    # enables it with cpu=False, and DeepSpeed then sets up its own (gloo on CPU) process group.
    return Accelerator(
        cpu=not torch.cuda.is_available() and not use_ds,
        mixed_precision=_resolve_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum,
        **kwargs,
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _num_tokens(batch: dict) -> int:
    if "num_tokens" in batch:
        return int(batch["num_tokens"])
    am = batch.get("attention_mask")
    if isinstance(am, torch.Tensor) and am.ndim == 2:
        return int(am.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
            and (p / "loop_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


class _StageState:
    """Adapter so accelerate's save_state/load_state carries the stage's own state."""

    def __init__(self, stage):
        self.stage = stage

    def state_dict(self):
        return self.stage.state_dict()

    def load_state_dict(self, state):
        self.stage.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------- loop


def train(stage, cfg: LoopConfig) -> TrainResult:
    """Optimise `stage.model` with `stage.loss` as configured by `cfg` (see the module docstring)."""
    from accelerate.utils import set_seed

    if cfg.batch_size < 1 or cfg.grad_accum < 1:
        raise FlanmixError("batch_size and grad_accum must be >= 1", field="batch_size")
    if cfg.threads:
        # Tiny models on a few busy cores train several times faster on one thread than on spinning OpenMP ones.
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    accelerator = _make_accelerator(cfg)
    set_seed(cfg.seed)
    world, rank = accelerator.num_processes, accelerator.process_index
    is_main = accelerator.is_main_process
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    model = stage.model
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            raise FlanmixError("model does not support gradient checkpointing", field="gradient_checkpointing")
    model.train()

    groups = stage.param_groups(model) if hasattr(stage, "param_groups") else None
    groups = groups or param_groups(model, cfg.weight_decay)
    optimizer = _adamw(groups, cfg)

    # -- data: a map-style dataset the loop batches, or micro-batches the stage makes itself
    own_batches = hasattr(stage, "batches")
    dataset = None if own_batches else stage.train_dataset()
    global_rows = cfg.batch_size * cfg.grad_accum * world
    if own_batches:
        if cfg.max_steps is None:
            raise FlanmixError("a stage that makes its own batches needs max_steps", field="max_steps")
        total_steps = cfg.max_steps
    else:
        if len(dataset) == 0:
            raise FlanmixError("training dataset is empty", field="data")
        total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(dataset) / global_rows))
    lengths = stage.lengths() if (dataset is not None and hasattr(stage, "lengths")) else None

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.schedule, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if hasattr(stage, "state_dict") and hasattr(stage, "load_state_dict"):
        accelerator.register_for_checkpointing(_StageState(stage))

    history: list[dict] = []
    writer = None
    if is_main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        except ImportError:  # tensorboard is optional
            writer = None
    metrics_file = (out / "metrics.jsonl").open("a", encoding="utf-8") if is_main else None

    def log(record: dict) -> None:
        if not is_main:
            return
        history.append(record)
        metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    writer.add_scalar(f"{stage.name}/{k}", v, record["step"])

    ctx = LoopContext(accelerator=accelerator, model=model, unwrapped=accelerator.unwrap_model(model), cfg=cfg,
                      log=log)

    # -- resume
    step, position = 0, 0
    last_ckpt: Path | None = None
    resume_from = _find_resume(cfg, out)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        state = json.loads((resume_from / "loop_state.json").read_text())
        step, position = state["step"], state["position"]
        if state.get("total_steps") not in (None, total_steps):
            raise FlanmixError(f"checkpoint was made for {state['total_steps']} total steps, config gives "
                               f"{total_steps}", file=resume_from, field="max_steps")
        last_ckpt = resume_from
        if is_main:
            print(f"[{stage.name}] resumed from {resume_from} at step {step}", flush=True)
    ctx.step = step
    if hasattr(stage, "setup"):
        stage.setup(ctx)

    stream = None
    if dataset is not None:
        stream = IndexStream(len(dataset), cfg.seed, lengths if cfg.group_by_length else None, global_rows)
    batch_iter: Iterator[dict] | None = iter(stage.batches(ctx)) if own_batches else None
    count_fn = getattr(stage, "count", default_count)

    def next_micro_batches() -> list[dict]:
        """This process's grad_accum micro-batches of the next step (CPU tensors)."""
        nonlocal position
        if batch_iter is not None:
            mbs = [next(batch_iter) for _ in range(cfg.grad_accum)]
            position += cfg.grad_accum
            return mbs
        idx = stream.take(position, global_rows)
        position += global_rows
        if lengths is not None:
            # Rows of similar length share a micro-batch (less padding); the step's loss does not depend on it.
            idx.sort(key=lambda i: -lengths[i])
        chunks = [idx[k * cfg.batch_size:(k + 1) * cfg.batch_size] for k in range(cfg.grad_accum * world)]
        return [stage.collate([dataset[i] for i in chunks[k]]) for k in range(rank, len(chunks), world)]

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, desc=stage.name, disable=not (is_main and cfg.progress),
               dynamic_ncols=True)
    device = accelerator.device
    gas = cfg.grad_accum
    zero = lambda: torch.zeros((), device=device)  # noqa: E731
    win_loss, win_steps, win_tokens, win_metrics = zero(), 0, 0, {}
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    win_start = time.perf_counter()
    grad_norm = None

    def check_finite() -> None:
        bad = int(accelerator.reduce(bad_step.clone(), "max")) if world > 1 else int(bad_step)
        if bad >= 0:
            where = f"; last good checkpoint: {last_ckpt}" if last_ckpt else "; no checkpoint was saved"
            if metrics_file is not None:
                metrics_file.write(json.dumps({"step": bad, "event": "nonfinite_loss"}) + "\n")
                metrics_file.flush()
            raise FlanmixError(f"[{stage.name}] loss became NaN/inf at step {bad}; training stopped{where} "
                               f"(try a lower lr, max_grad_norm, or fp32)")

    def save_checkpoint() -> Path:
        nonlocal last_ckpt
        check_finite()
        final = out / "checkpoints" / f"step-{step}"
        tmp = out / "checkpoints" / f"step-{step}.tmp"
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if is_main:
            (tmp / "loop_state.json").write_text(json.dumps(
                {"step": step, "position": position, "total_steps": total_steps, "stage": stage.name,
                 "config": _jsonable(asdict(cfg))}, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in checkpoints(out)[: -cfg.keep_checkpoints] if cfg.keep_checkpoints > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        last_ckpt = final
        return final

    eval_data = stage.eval_dataset() if hasattr(stage, "eval_dataset") else None

    def evaluate() -> None:
        if not eval_data and not hasattr(stage, "evaluate"):
            return
        model.eval()
        record: dict[str, Any] = {"step": step}
        if eval_data:
            ebs = cfg.eval_batch_size or cfg.batch_size
            starts = list(range(0, len(eval_data), ebs))
            total = zero()
            weight = zero()
            with torch.no_grad():
                for s in starts[rank::world]:
                    b = stage.collate([eval_data[i] for i in range(s, min(s + ebs, len(eval_data)))])
                    c = float(count_fn(b))
                    loss, _ = stage.loss(model, _to_device(b, device))
                    total += loss.detach().float() * c
                    weight += c
            if world > 1:
                total, weight = accelerator.reduce(total, "sum"), accelerator.reduce(weight, "sum")
            record["eval_loss"] = float(total / weight.clamp_min(1e-12))
        if hasattr(stage, "evaluate"):
            record.update(stage.evaluate(ctx) or {})
        model.train()
        log(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, float)})

    # -- the loop
    while step < total_steps:
        mbs = next_micro_batches()
        counts = [float(count_fn(b)) for b in mbs]
        # loss_i * count_i / W is this micro-batch's share of the global mean; accelerate divides by gas and the
        # gradient all-reduce averages over processes, so both are multiplied back.
        if world > 1:
            total_count = accelerator.reduce(torch.tensor(sum(counts), device=device), "sum")
        else:
            total_count = sum(counts) or 1.0  # a Python float: no tensor op, no host-device copy
        scale = [c * gas * world / total_count for c in counts]
        step_loss = zero()
        for b, s, c in zip(mbs, scale, counts):
            win_tokens += _num_tokens(b)
            b = _to_device(b, device)
            with accelerator.accumulate(model):
                loss, metrics = stage.loss(model, b)
                accelerator.backward(loss * s)
                share = s / (gas * world)
                step_loss += loss.detach().float() * share
                for k, v in metrics.items():
                    v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v), device=device)
                    win_metrics[k] = win_metrics.get(k, zero()) + v * share
                if accelerator.sync_gradients:
                    grad_norm = None
                    if cfg.max_grad_norm:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        bad_step = torch.where((bad_step < 0) & ~torch.isfinite(step_loss),
                               torch.tensor(step + 1, device=device), bad_step)
        win_loss += step_loss
        win_steps += 1
        step += 1
        ctx.step = step
        bar.update(1)

        if step % cfg.log_every == 0 or step == total_steps:
            check_finite()
            elapsed = time.perf_counter() - win_start
            vals = torch.stack([win_loss] + list(win_metrics.values()))
            if world > 1:
                vals = accelerator.reduce(vals, "sum")
                win_tokens_all = int(accelerator.reduce(torch.tensor(win_tokens, device=device), "sum"))
            else:
                win_tokens_all = win_tokens
            vals = (vals / win_steps).tolist()
            record = {"step": step, "loss": vals[0], "lr": scheduler.get_last_lr()[0],
                      "tokens_per_s": win_tokens_all / max(elapsed, 1e-9), "tokens": win_tokens_all,
                      "time_s": elapsed,
                      "epoch": (position / len(dataset)) if dataset is not None else None}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            record.update({f"{k}": v for k, v in zip(win_metrics.keys(), vals[1:])})
            log(record)
            bar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{record['lr']:.2e}")
            win_loss, win_steps, win_tokens, win_metrics = zero(), 0, 0, {}
            win_start = time.perf_counter()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
            evaluate()
        if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
            save_checkpoint()

    bar.close()
    check_finite()
    evaluate()
    save_checkpoint()
    final_dir = None
    if cfg.save_final:
        final_dir = out / "final"
        save_final(stage, ctx, final_dir)
    if metrics_file is not None:
        metrics_file.close()
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(steps=step, history=history, final_dir=str(final_dir) if final_dir else None,
                       last_checkpoint=str(last_ckpt) if last_ckpt else None)


def save_final(stage, ctx: LoopContext, out_dir: Path) -> None:
    """Write the trained model (stage.save if it has one, else save_pretrained + tokenizer), atomically."""
    acc = ctx.accelerator
    tmp = out_dir.parent / f"{out_dir.name}.tmp"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    if hasattr(stage, "save"):
        stage.save(ctx, tmp)
    else:
        state = acc.get_state_dict(ctx.model)
        unwrapped = acc.unwrap_model(ctx.model)
        if hasattr(unwrapped, "config") and getattr(unwrapped.config, "use_cache", None) is False:
            unwrapped.config.use_cache = True
        unwrapped.save_pretrained(tmp, state_dict=state, is_main_process=acc.is_main_process,
                                  save_function=acc.save, safe_serialization=True)
        if acc.is_main_process and getattr(stage, "tokenizer", None) is not None:
            stage.tokenizer.save_pretrained(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    acc.wait_for_everyone()


def _find_resume(cfg: LoopConfig, out: Path) -> Path | None:
    if cfg.resume in ("never", "", None):
        return None
    if cfg.resume == "auto":
        found = checkpoints(out)
        return found[-1] if found else None
    p = Path(cfg.resume)
    if not (p / "loop_state.json").exists():
        raise FlanmixError("not a complete checkpoint folder", file=p, field="resume",
                           expected="checkpoints/step-N with loop_state.json")
    return p


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)
