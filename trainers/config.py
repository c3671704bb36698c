"""Training configs (torch-free): the loop settings every stage shares, loading them, and the record a run writes.

`LoopSettings` is the one definition of the loop's settings: `trainers.loop.train(stage, settings)` reads it, and
each stage's config subclasses it with its own fields (see `trainers.sft.SFTConfig`). Unknown keys are errors, and
a config read from YAML reports them as `file:line: field: message` (through `flanmix.core.yamlio`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, field_validator

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError
from flanmix.core.strict import StrictMutable
from flanmix.core.yamlio import YamlDoc, validate_mapping

T = TypeVar("T", bound=BaseModel)


class PeftSettings(StrictMutable):
    """The `peft:` block of a stage config: train a LoRA adapter (PEFT) instead of every weight (docs/lora.md).

    `peft: true` takes the defaults; `--set 'peft={r: 8, alpha: 16}'` sets it from the command line."""

    r: int = Field(8, ge=1)                           # LoRA rank
    alpha: float = Field(16.0, gt=0)                  # scale alpha / r
    dropout: float = Field(0.0, ge=0, lt=1)
    # module names (or name suffixes) to adapt; "all-linear": every linear layer but the output head
    target_modules: list[str] | str = "all-linear"
    modules_to_save: list[str] = []                   # extra modules trained in full (the RM/critic head always is)
    qlora: bool = False                               # 4-bit base weights (bitsandbytes, CUDA only)

    @field_validator("target_modules")
    @classmethod
    def _nonempty(cls, value: list[str] | str) -> list[str] | str:
        if not value:
            raise ValueError("name at least one module (or 'all-linear')")
        return value


class AdapterField(StrictMutable):
    """Mixin for stage configs: the optional `peft:` block (None: full fine-tuning, the default)."""

    peft: PeftSettings | None = None

    @field_validator("peft", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value


class LoopSettings(StrictMutable):
    """Optimisation, logging and checkpointing settings shared by all stages. Sizes are per process: the global
    batch is batch_size * grad_accum * num_processes rows."""

    output_dir: str
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)         # optimizer steps; overrides epochs
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)      # cosine/linear decay down to lr * min_lr_ratio
    max_grad_norm: float | None = Field(1.0, ge=0)    # None or 0: no clipping
    # auto: bf16 on a GPU that supports it, else fp32 (bf16 autocast on CPU is slower)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    group_by_length: bool = False                     # steps of similar-length rows (needs stage.lengths())
    eval_every: int = Field(0, ge=0)                  # steps; 0: only at the end (if the stage has eval data)
    eval_batch_size: int | None = Field(None, ge=1)
    save_every: int = Field(0, ge=0)                  # steps; 0: only the final checkpoint
    keep_checkpoints: int = Field(2, ge=0)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    resume: str = "auto"                              # auto | never | path to a checkpoint folder
    progress: bool = True
    tensorboard: bool = True
    # more trackers through accelerate (each needs its package; configured by its own environment variables,
    # e.g. WANDB_MODE=offline, MLFLOW_TRACKING_URI=file:/path); `project` names the wandb project / MLflow experiment
    log_with: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)
    project: str = "flanmix"
    deepspeed: str | dict[str, Any] | None = None     # DeepSpeed config (file or dict); or `accelerate launch`'s
    save_final: bool = True
    threads: int | None = Field(None, ge=1)           # torch CPU threads during the run (None: torch's default)

    @field_validator("output_dir")
    @classmethod
    def _not_a_file(cls, value: str) -> str:
        if Path(value).is_file():
            raise ValueError(f"{value} is an existing file; expected a folder (new or a run to resume)")
        return value

    def loop_fields(self) -> dict[str, Any]:
        """Only the loop's settings (not a stage's own fields), JSON-ready (recorded in every checkpoint)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k in LoopSettings.model_fields}


def load_config(path: str | Path, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """Read a YAML config file into `cls`, keyword `overrides` on top; errors name file, line and field."""
    doc = YamlDoc.read(path)
    if not isinstance(doc.data, dict):
        raise FlanmixError("config must be a mapping", file=path, expected="key: value pairs")
    return doc.validate(cls, {**doc.data, **(overrides or {})})


def parse_config(config: Any, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    """A stage config from a YAML path, a mapping or a `cls` object, with keyword `overrides` on top."""
    if isinstance(config, (str, Path)):
        return load_config(config, cls, overrides)
    data = config.model_dump(exclude_unset=True) if isinstance(config, cls) else config
    if not isinstance(data, dict):
        raise FlanmixError("config must be a mapping", expected="key: value pairs")
    return validate_mapping({**data, **(overrides or {})}, cls)


def is_main_process() -> bool:
    """True in the process that writes run files (rank 0 under `accelerate launch` / torchrun, or alone)."""
    return os.environ.get("RANK", "0") == "0"


def write_run_info(cfg: BaseModel, name: str, extra: dict | None = None) -> None:
    """`<output_dir>/<name>_config.json`: the resolved config (and any extra facts) of a run (main process only)."""
    if not is_main_process():
        return
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file on the way, a read-only file system: one line, before any work
        raise FlanmixError(f"cannot create the run folder: {err.strerror or err}", file=out, field="output_dir",
                           expected="a writable folder") from None
    write_text(out / f"{name}_config.json", json.dumps({**cfg.model_dump(), **(extra or {})}, indent=1, default=str))
