"""Checkpoints of a run: save (atomic, keep the newest N), find and resume, and the final model folder.

`<output_dir>/checkpoints/step-N/` holds accelerate's state (model, optimizer, scheduler, RNG of every process, the
stage's own state) and `loop_state.json` (step, data position, total steps, loop settings). It is written as
`step-N.tmp` and renamed, so a crash or a NaN stop never leaves a half-written "last good" checkpoint. Every
process takes part in saving (ZeRO shards its state); only the main process writes the shared files.

A model with a LoRA adapter (`trainers.adapters`) is checkpointed without its frozen base: only the trainable
parameters are written (listed in `trainable_only.json`), and resuming loads them over the base the run starts
from, so the adapter, optimizer and RNG states come back exactly while a checkpoint stays adapter-sized.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flanmix.core.errors import FlanmixError
from flanmix.core.jsonl import read_json
from trainers.adapters import has_adapter, trainable_names
from trainers.config import LoopSettings, is_main_process
from trainers.metrics import MetricsLog, NonFiniteGuard
from trainers.protocol import LoopContext, Stage


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
            and (p / "loop_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def find_resume(cfg: LoopSettings) -> Path | None:
    """The checkpoint to resume from: `resume` = auto (the latest complete one, if any) | never | a folder."""
    if cfg.resume in ("never", "", None):
        return None
    if cfg.resume == "auto":
        found = checkpoints(cfg.output_dir)
        return found[-1] if found else None
    p = Path(cfg.resume)
    if not (p / "loop_state.json").exists():
        raise FlanmixError("not a complete checkpoint folder", file=p, field="resume",
                           expected="checkpoints/step-N with loop_state.json")
    return p


TRAINABLE_ONLY = "trainable_only.json"


def drop_frozen_weights(models: list, weights: list[dict], output_dir: str) -> None:
    """accelerate save hook: keep only the trainable parameters of an adapter-wrapped model (see the module
    docstring) and list them in `trainable_only.json`; models without an adapter are saved whole."""
    listed: dict[str, list[str]] = {}
    for i, (model, state) in enumerate(zip(models, weights)):
        if not has_adapter(model):
            continue
        keep = trainable_names(model)
        for key in [k for k in state if k not in keep]:
            del state[key]
        listed[str(i)] = sorted(keep)
    if listed and is_main_process():
        Path(output_dir, TRAINABLE_ONLY).write_text(json.dumps(listed, indent=1))


def check_trainable_only(models: list, input_dir: str) -> None:
    """accelerate load hook: an adapter-only checkpoint must hold exactly the parameters this run trains (same
    targets, rank and heads), since it is loaded non-strictly over the base."""
    path = Path(input_dir)
    if not (path / TRAINABLE_ONLY).is_file():
        return
    listed = read_json(path / TRAINABLE_ONLY, what="checkpoint parameter list")
    for i, model in enumerate(models):
        want = sorted(trainable_names(model))
        if listed.get(str(i), want) != want:
            raise FlanmixError("checkpoint's adapter parameters differ from this run's (peft settings changed?)",
                               file=path, field="peft", expected="the peft settings the checkpoint was made with")


class StageState:
    """Adapter so accelerate's save_state/load_state carries the stage's own state."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def state_dict(self) -> dict:
        return self.stage.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stage.load_state_dict(state)


class Checkpointer:
    """Saves and restores the checkpoints of one run; `last` is the newest complete one (for the NaN message)."""

    def __init__(self, accelerator: Any, cfg: LoopSettings, log: MetricsLog, guard: NonFiniteGuard,
                 total_steps: int):
        self.acc, self.cfg, self.log, self.guard = accelerator, cfg, log, guard
        self.out = Path(cfg.output_dir)
        self.total_steps = total_steps
        self.last: Path | None = None
        accelerator.register_save_state_pre_hook(drop_frozen_weights)
        accelerator.register_load_state_pre_hook(check_trainable_only)

    def resume(self) -> tuple[int, int]:
        """Load the checkpoint `cfg.resume` points at; returns (step, data position), (0, 0) for a fresh run."""
        path = find_resume(self.cfg)
        if path is None:
            return 0, 0
        if (path / TRAINABLE_ONLY).is_file():
            # the frozen base is not in the file; check_trainable_only (a load hook) checks what is
            self.acc.load_state(str(path), strict=False)
        else:
            self.acc.load_state(str(path))
        state = json.loads((path / "loop_state.json").read_text())
        if state.get("total_steps") not in (None, self.total_steps):
            raise FlanmixError(f"checkpoint was made for {state['total_steps']} total steps, config gives "
                               f"{self.total_steps}", file=path, field="max_steps")
        self.last = path
        if self.acc.is_main_process:
            print(f"[{self.log.name}] resumed from {path} at step {state['step']}", flush=True)
        return state["step"], state["position"]

    def save(self, step: int, position: int) -> Path:
        """Write checkpoints/step-N atomically (never after a non-finite loss) and drop the oldest beyond
        keep_checkpoints."""
        self.guard.check(self.acc, self.log, self.last)
        final = self.out / "checkpoints" / f"step-{step}"
        # Not core.atomic: every process writes into the same temporary folder, so its name has no pid.
        tmp = self.out / "checkpoints" / f"step-{step}.tmp"
        is_main = self.acc.is_main_process
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        with write_errors(f"[{self.log.name}] checkpoint step-{step}", tmp):
            self.acc.save_state(str(tmp))
            self.acc.wait_for_everyone()
            if is_main:
                (tmp / "loop_state.json").write_text(json.dumps(
                    {"step": step, "position": position, "total_steps": self.total_steps, "stage": self.log.name,
                     "config": self.cfg.loop_fields()}, indent=1))
        if is_main:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            keep = self.cfg.keep_checkpoints
            for old in checkpoints(self.out)[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        self.last = final
        return final


# What torch's zip writer says when a write fails part-way (a full disk): a RuntimeError, not an OSError.
TORCH_WRITE_FAILURES = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


@contextlib.contextmanager
def write_errors(what: str, tmp: Path) -> Iterator[None]:
    """Turn a failed write inside the block (a full disk, a quota, a read-only file system) into one FlanmixError
    naming `what`, after removing the half-written `tmp` folder; other errors pass through unchanged."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(m in str(err) for m in TORCH_WRITE_FAILURES):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[-1]
        raise FlanmixError(f"{what} could not be written: {reason} (is the disk full?)", file=tmp.parent,
                           expected="free space for the checkpoint") from None


def save_final(stage: Stage, ctx: LoopContext, out_dir: Path) -> None:
    """Write the trained model with `stage.save` into a temporary folder renamed to `out_dir` when complete."""
    acc = ctx.accelerator
    tmp = out_dir.parent / f"{out_dir.name}.tmp"  # one name for all processes (see Checkpointer.save)
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    with write_errors("final model", tmp):
        stage.save(ctx, tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp, out_dir)
    acc.wait_for_everyone()
