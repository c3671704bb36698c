"""Validated YAML configs for training stages (pydantic; unknown keys are errors, messages are one line).

`LoopSettings` holds the fields every stage shares (they map 1:1 onto `trainers.loop.LoopConfig`); a stage's config
subclasses it and adds its own fields (see `trainers.sft.SFTConfig`). `load_config(path, cls)` reads a YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flanmix.core.errors import FlanmixError

from trainers.loop import LoopConfig

T = TypeVar("T", bound=BaseModel)


class LoopSettings(BaseModel):
    """Optimisation, logging and checkpointing settings shared by all stages (see LoopConfig for meanings)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    output_dir: str
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: Optional[int] = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: Optional[float] = Field(1.0, ge=0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    eval_every: int = Field(0, ge=0)
    eval_batch_size: Optional[int] = Field(None, ge=1)
    save_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=0)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    resume: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    deepspeed: Optional[str | dict[str, Any]] = None
    save_final: bool = True
    threads: Optional[int] = Field(None, ge=1)

    def loop_config(self) -> LoopConfig:
        """The LoopConfig for these settings."""
        fields = LoopConfig.__dataclass_fields__
        return LoopConfig(**{k: v for k, v in self.model_dump().items() if k in fields})


def format_validation_error(err: ValidationError, source: str | Path | None = None) -> FlanmixError:
    """First pydantic error as a one-line FlanmixError (file, dotted field, message)."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    more = f" (+{len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return FlanmixError(msg + more, file=source, field=loc)


def validate(data: Any, cls: type[T], *, source: str | Path | None = None) -> T:
    """Validate a mapping into `cls`, raising FlanmixError on the first problem."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise FlanmixError("config must be a mapping", file=source, expected="key: value pairs")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise format_validation_error(err, source) from err


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with one-line errors."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FlanmixError("config file not found", file=p)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        raise FlanmixError(f"invalid YAML: {getattr(err, 'problem', None) or err}", file=p,
                           line=line + 1 if line is not None else None) from err


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read and validate a YAML config file."""
    return validate(read_yaml(path), cls, source=path)
