"""The process a run trains in: torch threads and environment (restored afterwards), the accelerator, and model
switches (gradient checkpointing)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (when given) for the block, then back to what they were, also on an
    error. Tiny models on a few busy cores train several times faster on one thread than on spinning OpenMP ones."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def accelerator_rng(device: torch.device) -> dict[str, Any]:
    """`torch.random.fork_rng` arguments that save and restore the RNG of `device` besides the CPU's: a block that
    reseeds for a fixed draw (an evaluation) then leaves a GPU run's sampling exactly where it was."""
    if device.type == "cpu":
        return {"devices": []}
    index = device.index if device.index is not None else getattr(torch, device.type).current_device()
    return {"devices": [index], "device_type": device.type}


@contextlib.contextmanager
def process_settings(cfg: LoopSettings) -> Iterator[None]:
    """Apply the process-wide settings of a run (`threads`) and restore them, and `os.environ` (accelerate and
    the DeepSpeed set-up write to it), when the run ends, also on an error."""
    environ = dict(os.environ)
    try:
        with torch_threads(cfg.threads):
            yield
    finally:
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)


def resolve_mixed_precision(mode: str) -> str:
    """'auto' -> bf16 on a GPU that supports it, else 'no'; other modes as given."""
    if mode not in ("auto", "no", "bf16", "fp16"):
        raise FlanmixError(f"unknown mixed_precision {mode!r}", field="mixed_precision",
                           expected="auto | no | bf16 | fp16")
    if mode != "auto":
        return mode
    # bf16 autocast on CPU is slower and larger than fp32 (measured), so auto means bf16 only on a GPU.
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def deepspeed_config(cfg: LoopSettings) -> dict | None:
    """The DeepSpeed config of `cfg.deepspeed` (a file or a dict), with the loop's sizes filled in for "auto"."""
    ds = cfg.deepspeed
    if ds is None:
        return None
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
    auto = {"gradient_accumulation_steps": cfg.grad_accum, "train_micro_batch_size_per_gpu": cfg.batch_size,
            "gradient_clipping": cfg.max_grad_norm or 0.0}
    for key, value in auto.items():
        if ds.get(key) == "auto":
            ds[key] = value
    ds.pop("train_batch_size", None)
    return ds


def make_accelerator(cfg: LoopSettings) -> Accelerator:
    """A fresh Accelerator for one run (CPU, GPU, several processes, DeepSpeed)."""
    # Several runs in one process (tests, pipelines) must not inherit the previous run's accumulation settings.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    kwargs: dict[str, Any] = {}
    ds = deepspeed_config(cfg)
    if ds is not None:
        kwargs["deepspeed_plugin"] = DeepSpeedPlugin(hf_ds_config=ds)
        # accelerate reads this flag when it sets up the process group (before it looks at the plugin);
        # process_settings() restores the environment after the run
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    use_ds = ds is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if use_ds and not torch.cuda.is_available():
        # On CPU accelerate finds no backend for DeepSpeed by itself and would silently run each process alone.
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    # Without cpu=True accelerate ignores a multi-process launch on a machine without GPUs (each process would
    # think it is alone); with it, processes join a gloo group. DeepSpeed is the exception: accelerate only
    # enables it with cpu=False, and DeepSpeed then sets up its own (gloo on CPU) process group.
    if cfg.log_with:
        missing = [name for name in cfg.log_with if importlib.util.find_spec(name) is None]
        if missing:
            raise FlanmixError(f"log_with: {', '.join(missing)} is not installed", field="log_with",
                               expected=f"pip install {' '.join(missing)}, or remove it from log_with")
        kwargs["log_with"] = list(cfg.log_with)
    return Accelerator(
        cpu=not torch.cuda.is_available() and not use_ds,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum,
        **kwargs,
    )


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass (non-reentrant), on transformers' old and new APIs."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise FlanmixError("model does not support gradient checkpointing", field="gradient_checkpointing")
