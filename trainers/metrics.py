"""What a run reports: `metrics.jsonl` + TensorBoard + the returned history (`MetricsLog`), the loss and metrics
averaged over the steps between two log records (`StepWindow`), and the non-finite-loss stop (`NonFiniteGuard`).

Step values stay device tensors until a log step, so training never waits on a host-device copy per step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError


class MetricsLog:
    """One JSON object per log/eval event in `<out>/metrics.jsonl`, the same scalars in `<out>/tb` (TensorBoard,
    when installed) and in `history`. Only the main process writes; the others keep nothing.

    Nothing is opened until `start(step)`, called once the run knows where it starts: a resumed run first drops
    the records after its checkpoint's step (a crash after the checkpoint left them, and the resumed run logs
    those steps again) and tells TensorBoard to purge them, so the steps of a run are strictly increasing."""

    def __init__(self, out: Path, name: str, *, enabled: bool, tensorboard: bool, accelerator: Any = None,
                 project: str = "flanmix", config: dict | None = None):
        self.out, self.name, self.enabled, self.tensorboard = out, name, enabled, tensorboard
        self.history: list[dict] = []
        self.writer = None
        self.file = None
        # accelerate's trackers (wandb, mlflow), when the accelerator was made with log_with
        self.accelerator = accelerator if accelerator is not None and accelerator.log_with else None
        self.project, self.config = project, config or {}

    def start(self, step: int) -> None:
        """Open metrics.jsonl (kept up to `step`, the step the run starts from) and the TensorBoard writer."""
        if not self.enabled:
            return
        path = self.out / "metrics.jsonl"
        truncate_records(path, step)
        if self.tensorboard:
            try:  # tensorboard is an optional dependency, hence imported here
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: TensorBoard hides the older event files' events from this step on
                self.writer = SummaryWriter(str(self.out / "tb"), purge_step=step + 1 if step else None)
            except ImportError:
                self.writer = None
        self.file = path.open("a", encoding="utf-8")
        if self.accelerator is not None:
            self.start_trackers(resuming=step > 0)

    def start_trackers(self, resuming: bool) -> None:
        """Start accelerate's trackers; a resumed run continues the wandb / MLflow runs its first start recorded in
        `tracker_runs.json` (their configuration is logged once, by the first start: MLflow parameters cannot
        change). Steps that a crash logged after the checkpoint are logged again there: neither tool can purge
        them, as TensorBoard and metrics.jsonl do."""
        ids_file = self.out / "tracker_runs.json"
        known = json.loads(ids_file.read_text()) if resuming and ids_file.is_file() else {}
        wandb = {"dir": str(self.out), "name": f"{self.name}:{self.out.name}"}
        mlflow = {"run_name": f"{self.name}:{self.out.name}"}
        if "wandb" in known:
            wandb.update(id=known["wandb"], resume="allow")
        if "mlflow" in known:
            mlflow["run_id"] = known["mlflow"]
        self.accelerator.init_trackers(self.project, config=None if known else self.config,
                                       init_kwargs={"wandb": wandb, "mlflow": mlflow})
        ids = {}
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                ids["wandb"] = tracker.run.id
            elif tracker.name == "mlflow":
                ids["mlflow"] = tracker.active_run.info.run_id
        if ids:
            write_text(ids_file, json.dumps(ids) + "\n")

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, record: dict) -> None:
        """Log one record (history, JSONL and TensorBoard)."""
        if not self.enabled:
            return
        self.history.append(record)
        self.event(record)
        scalars = {f"{self.name}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and k != "step"}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, record["step"])
        if self.accelerator is not None:
            self.accelerator.log(scalars, step=record["step"])

    def event(self, record: dict) -> None:
        """Append a record to metrics.jsonl only (e.g. the step where the loss became non-finite)."""
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.accelerator is not None:
            # finish the wandb / MLflow runs here, also when the run failed (the loop's end_training then has none)
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator.trackers = []


def truncate_records(path: Path, step: int) -> None:
    """Keep only the records of `path` (a metrics.jsonl) up to `step`; a torn last line (a kill mid-write) and
    every line after `step` go. The file is rewritten atomically, and only when something is dropped."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break  # a torn line: nothing after it was written by a complete run
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            break  # records are in step order: the rest belongs to the steps the resumed run repeats
        kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) < len(lines) or any(not line.endswith("\n") for line in lines):
        write_text(path, "".join(kept))


def progress_bar(name: str, total: int, initial: int, enabled: bool) -> tqdm:
    """The tqdm bar of a run (main process only, when `progress` is on)."""
    return tqdm(total=total, initial=initial, desc=name, disable=not enabled, dynamic_ncols=True)


class StepWindow:
    """Sums of the loss, the stage's metrics and the token count over the steps since the last log record."""

    def __init__(self, device: torch.device):
        self.device = device
        self.grad_norm: torch.Tensor | float | None = None  # of the latest optimizer step
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)
        self.metrics: dict[str, torch.Tensor] = {}
        self.steps, self.tokens = 0, 0
        self.start = time.perf_counter()

    def add_metrics(self, metrics: dict, share: float) -> None:
        """Add one micro-batch's metrics, weighted by its share of the global batch."""
        for k, v in metrics.items():
            v = v.detach().float() if isinstance(v, torch.Tensor) else torch.tensor(float(v), device=self.device)
            self.metrics[k] = self.metrics.get(k, torch.zeros((), device=self.device)) + v * share

    def end_step(self, step_loss: torch.Tensor) -> None:
        self.loss += step_loss
        self.steps += 1

    def record(self, accelerator: Any, step: int, lr: float, epoch: float | None) -> dict:
        """The log record of the window (means over its steps, summed over processes), then a fresh window."""
        elapsed = time.perf_counter() - self.start
        vals = torch.stack([self.loss] + list(self.metrics.values()))
        tokens = self.tokens
        if accelerator.num_processes > 1:
            vals = accelerator.reduce(vals, "sum")
            tokens = int(accelerator.reduce(torch.tensor(tokens, device=self.device), "sum"))
        vals = (vals / self.steps).tolist()
        record = {"step": step, "loss": vals[0], "lr": lr, "tokens_per_s": tokens / max(elapsed, 1e-9),
                  "tokens": tokens, "time_s": elapsed, "epoch": epoch}
        if self.grad_norm is not None:
            record["grad_norm"] = float(self.grad_norm)
        record.update(zip(self.metrics.keys(), vals[1:]))
        self.reset()
        return record


class NonFiniteGuard:
    """Remembers the first step whose loss was NaN/inf (on the device, no sync) and stops the run when checked."""

    def __init__(self, device: torch.device):
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, step_loss: torch.Tensor, step: int) -> None:
        """Record `step` if its loss is not finite and no earlier step was."""
        self.bad_step = torch.where((self.bad_step < 0) & ~torch.isfinite(step_loss),
                                    torch.tensor(step, device=self.bad_step.device), self.bad_step)

    def check(self, accelerator: Any, log: MetricsLog, last_checkpoint: Path | None) -> None:
        """Raise FlanmixError (naming the step and the last good checkpoint) if any process saw a non-finite loss."""
        if accelerator.num_processes > 1:
            bad = int(accelerator.reduce(self.bad_step.clone(), "max"))
        else:
            bad = int(self.bad_step)
        if bad >= 0:
            where = f"; last good checkpoint: {last_checkpoint}" if last_checkpoint else "; no checkpoint was saved"
            log.event({"step": bad, "event": "nonfinite_loss"})
            raise FlanmixError(f"[{log.name}] loss became NaN/inf at step {bad}; training stopped{where} "
                               f"(try a lower lr, max_grad_norm, or fp32)")
