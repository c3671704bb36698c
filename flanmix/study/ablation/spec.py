"""The ablation YAML file: its pydantic schema and its loader.

The pass-through sections (`mixture:`, `train:`, `preference.config:`) are validated against their owners' schemas
when the file is read, so a typo fails with file, line and field before any cell runs.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flanmix.core.errors import FlanmixError
from flanmix.core.strict import Strict
from flanmix.core.yamlio import YamlDoc
from flanmix.mixture import MixtureSpec
from flanmix.study.eval.options import EvalOptions, check_metrics
from trainers.archs import ARCHS
from trainers.init_model import SIZES
from trainers.sft import SFTConfig

LADDER_DEFAULT_VOCAB = 4096
# Fields of the mixture and stage configs that the ablation itself sets per cell; a spec may not override them.
MIXTURE_OWNED = ("components", "size", "seed", "name")
TRAIN_OWNED = ("model", "tokenizer", "data", "output_dir", "max_steps", "epochs", "batch_size", "packing",
               "max_length", "seed", "resume", "eval_data", "max_rows")
PREF_OWNED = ("model", "data", "output_dir", "seed", "resume")
EVAL_OWNED = ("registry_dirs", "threads")  # from the spec's top-level `registry` and `threads`


class ModelEntry(Strict):
    """One model of the size axis: a rung of the `flanmix init-model` ladder (of any `arch`) or a local model folder
    (any architecture transformers knows, e.g. a downloaded Flan-T5 or Qwen2.5)."""

    name: str = Field(description="label in tables and plots (and cell ids)")
    size: str | None = Field(None, description="an init-model ladder size (nano, tiny, mini, ...)")
    arch: str = Field("llama", description=f"architecture of a ladder rung ({' | '.join(ARCHS)})")
    path: str | None = Field(None, description="a local transformers model folder (relative to the spec file)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            arch, _, size = value.partition(":")
            if size and arch in ARCHS:
                return {"name": f"{arch}-{size}", "size": size, "arch": arch}  # "t5:tiny"
            if value in SIZES or not ("/" in value or "\\" in value or Path(value).exists()):
                return {"name": value, "size": value}  # an unknown size errors below, naming the ladder
            return {"name": Path(value).name, "path": value}
        if isinstance(value, dict) and "name" not in value:
            if value.get("size") is not None:
                arch = value.get("arch", "llama")
                return {**value, "name": value["size"] if arch == "llama" else f"{arch}-{value['size']}"}
            if value.get("path") is not None:
                return {**value, "name": Path(str(value["path"])).name}
        return value

    @model_validator(mode="after")
    def _one(self) -> ModelEntry:
        if (self.size is None) == (self.path is None):
            raise ValueError("give exactly one of size (an init-model ladder name) or path (a model folder)")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r} (expected one of {', '.join(ARCHS)})")
        if self.path is not None and "arch" in self.model_fields_set:
            raise ValueError("arch is for ladder sizes; a model folder's architecture comes from its config.json")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r} (expected one of {', '.join(SIZES)})")
        if not self.name or any(ch in self.name for ch in "/\\ "):
            raise ValueError(f"model name {self.name!r} must be non-empty without spaces or slashes")
        return self


class Budget(Strict):
    """The training budget every cell gets: optimizer steps or tokens (prompt + target tokens seen)."""

    steps: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=8)
    packing: bool = True
    repeat: bool = Field(False, description="allow a small subset to repeat its examples to fill the budget")

    @model_validator(mode="after")
    def _one(self) -> Budget:
        if (self.steps is None) == (self.tokens is None):
            raise ValueError("give exactly one of steps or tokens")
        return self


class HeldOut(Strict):
    """Evaluation-only tasks: whole clusters (Flan's held-out clusters) and/or task selectors."""

    clusters: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list, description="names, globs or cluster:X")

    @model_validator(mode="after")
    def _some(self) -> HeldOut:
        if not self.clusters and not self.tasks:
            raise ValueError("held_out needs clusters and/or tasks")
        return self


class EvalSettings(EvalOptions):
    """How cells are evaluated: any `EvalOptions` field (here `limit` defaults to 50 and `samples` to 2), plus
    what differs for the seen tasks. `registry_dirs` and `threads` come from the spec's `registry` and `threads`."""

    limit: int | None = Field(50, ge=1, description="examples per task (None: the whole validation split)")
    samples: int = Field(2, ge=0, description="example predictions per task in each eval report")
    seen: bool = Field(True, description="also evaluate the validation rows of the cell's training tasks")
    seen_limit: int | None = Field(None, ge=1, description="examples per seen task (default: limit)")
    seen_metrics: list[str] | None = Field(None, description="metrics for seen tasks (default: metrics)")

    @field_validator("seen_metrics")
    @classmethod
    def _known_seen_metrics(cls, value: list[str] | None) -> list[str] | None:
        return check_metrics(value)

    @model_validator(mode="after")
    def _not_owned(self) -> EvalSettings:
        # Compared with the defaults (not `model_fields_set`), so a dumped spec validates again in a worker.
        for name in EVAL_OWNED:
            if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True):
                raise ValueError(f"{name} is set by the ablation (from the spec's registry / threads)")
        return self

    def options(self, *, seen: bool, registry_dirs: list[str], threads: int | None) -> EvalOptions:
        """The `EvalOptions` of one evaluation: the held-out tasks, or with `seen` the cell's training tasks."""
        fields = self.model_dump(include=set(EvalOptions.model_fields))
        if seen:
            fields.update(limit=self.seen_limit or self.limit, metrics=self.seen_metrics or self.metrics)
        fields.update(registry_dirs=list(registry_dirs), threads=threads)
        return EvalOptions(**fields)


class PreferenceSettings(Strict):
    """An optional preference stage after SFT, on verifiable preferences from the cell's training tasks."""

    stage: Literal["dpo", "rrhf"] = "dpo"
    examples: int = Field(200, ge=2, description="preference pairs/rankings generated per cell")
    k: int = Field(4, ge=2, description="responses per ranking (rrhf)")
    config: dict[str, Any] = Field(default_factory=dict, description="extra stage config fields (beta, lr, ...)")


class CellResources(Strict):
    """What one cell asks a Ray cluster for (`flanmix ablate --engine ray`); Ray starts it where they are free."""

    num_cpus: float = Field(1, gt=0, description="CPUs (also torch's threads in the cell unless `threads` is set)")
    num_gpus: float = Field(0, ge=0, description="GPUs (the cell sees them as CUDA_VISIBLE_DEVICES)")


class Resources(CellResources):
    """Per-cell resources on Ray, with per-model overrides (bigger rungs may ask for more)."""

    models: dict[str, CellResources] = Field(default_factory=dict, description="model name -> its cells' resources")

    def of(self, model: str) -> CellResources:
        """The resources of a cell of `model`."""
        return self.models.get(model) or CellResources(num_cpus=self.num_cpus, num_gpus=self.num_gpus)


class AblationSpec(Strict):
    """An ablation YAML file."""

    name: str = "ablation"
    description: str = ""
    registry: list[str] = Field(default_factory=list, description="extra registry folders (relative to the file)")
    pool: list[str] | None = Field(None, description="training pool selectors; default: every task not held out")
    held_out: HeldOut
    task_counts: list[int] | None = None
    cluster_counts: list[int] | None = None
    subset_order: Literal["random", "round_robin"] = Field(
        "random", description="random: one seeded shuffle of the pool; round_robin: interleave clusters")
    subset_seed: int | None = Field(None, description="fixed order for every seed; default: each seed its own")
    models: list[ModelEntry] = Field(min_length=1)
    vocab_size: int = Field(LADDER_DEFAULT_VOCAB, ge=300, description="tokenizer size for ladder models")
    templates_per_task: list[int | None] = Field(default_factory=lambda: [None])
    cot_share: list[float | None] = Field(default_factory=lambda: [None])
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baseline: bool = Field(False, description="also evaluate each untrained model (0 tasks)")
    budget: Budget
    mixture: dict[str, Any] = Field(default_factory=dict, description="extra mixture fields (template_types, ...)")
    train: dict[str, Any] = Field(default_factory=dict, description="extra SFT config fields (lr, warmup_steps, ...)")
    preference: PreferenceSettings | None = None
    eval: EvalSettings = Field(default_factory=EvalSettings)
    keep_models: bool = Field(False, description="keep each cell's trained weights (otherwise deleted after eval)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (1 is fastest on a busy machine)")
    jobs: int = Field(1, ge=1, description="cells run at once (worker processes; use with threads: 1)")
    resources: Resources = Field(default_factory=Resources, description="per cell, with --engine ray")

    @model_validator(mode="after")
    def _check(self) -> AblationSpec:
        if (self.task_counts is None) == (self.cluster_counts is None):
            raise ValueError("give exactly one of task_counts or cluster_counts")
        counts = self.counts
        if not counts or any(c < 1 for c in counts):
            raise ValueError("counts must be a non-empty list of integers >= 1")
        if len(set(counts)) != len(counts):
            raise ValueError("counts must not repeat")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique (got {names})")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must not repeat")
        if any(t is not None and t < 1 for t in self.templates_per_task):
            raise ValueError("templates_per_task values must be >= 1 (or null for all)")
        if any(c is not None and not 0 <= c <= 1 for c in self.cot_share):
            raise ValueError("cot_share values must be in [0, 1] (or null for the mixture's own)")
        if set(self.resources.models) - set(names):
            raise ValueError(f"resources.models names unknown models {sorted(set(self.resources.models) - set(names))}"
                             f" (expected some of {names})")
        return self

    @property
    def axis(self) -> str:
        """"tasks" or "clusters": what the counts count."""
        return "tasks" if self.task_counts is not None else "clusters"

    @property
    def counts(self) -> list[int]:
        """The sorted task or cluster counts of the grid."""
        return sorted(self.task_counts if self.task_counts is not None else self.cluster_counts or [])


def load_spec(path: str | Path) -> tuple[AblationSpec, YamlDoc]:
    """Read and validate an ablation YAML file (errors name file, line and field)."""
    doc = YamlDoc.read(path).require_mapping("an ablation spec", "keys held_out, task_counts, models, budget, ...")
    spec = doc.validate(AblationSpec)
    _check_passthrough(spec, doc)
    return spec, doc


def preference_config_class(stage: str) -> type[BaseModel]:
    """The config model of a preference stage (`trainers.dpo.DPOConfig`, `trainers.rrhf.RRHFConfig`)."""
    return getattr(importlib.import_module(f"trainers.{stage}"), f"{stage.upper()}Config")


def _check_passthrough(spec: AblationSpec, doc: YamlDoc) -> None:
    """Validate the `mixture:`, `train:` and `preference.config:` sections against their owners' schemas, with the
    fields the ablation sets per cell filled in (and forbidden in the file)."""
    _check_owned(doc, spec.mixture, MIXTURE_OWNED, ["mixture"])
    if any(c is not None for c in spec.cot_share):
        _check_owned(doc, spec.mixture, ("cot",), ["mixture"])
    doc.validate(MixtureSpec, {**spec.mixture, "components": [{"task": "x"}]}, prefix=["mixture"])
    placeholders = {"model": "m", "data": "d", "output_dir": "o"}
    _check_owned(doc, spec.train, TRAIN_OWNED, ["train"])
    doc.validate(SFTConfig, {**spec.train, **placeholders}, prefix=["train"])
    if spec.preference is not None:
        _check_owned(doc, spec.preference.config, PREF_OWNED, ["preference", "config"])
        doc.validate(preference_config_class(spec.preference.stage), {**spec.preference.config, **placeholders},
                     prefix=["preference", "config"])


def _check_owned(doc: YamlDoc, section: dict, names: tuple[str, ...], loc: list[str]) -> None:
    for key in section:
        if key in names:
            raise FlanmixError("set by the ablation for each cell; it cannot be overridden here", file=doc.path,
                               line=doc.line_of([*loc, key]), field=".".join([*loc, key]))
