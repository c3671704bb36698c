"""The frontier YAML file: its schema and its loader.

Each `runs:` entry is one method swept over one knob; its `config:` is passed to the method's stage config
(`trainers.ppo.PPOConfig`, `trainers.dpo.DPOConfig`, `trainers.rrhf.RRHFConfig`) and validated against it when
the file is read, so a typo fails with file, line and field before anything trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from flanmix.core.errors import FlanmixError
from flanmix.core.strict import Strict
from flanmix.core.yamlio import YamlDoc
from trainers.init_model import SIZES
from trainers.stages import stage_config

#: method -> (training stage, fields the method fixes in that stage's config)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "ppo": ("ppo", {}),
    "dpo": ("dpo", {"loss_type": "sigmoid"}),
    "ipo": ("dpo", {"loss_type": "ipo"}),
    "rrhf": ("rrhf", {}),
}
#: stage fields the study sets for every run (a spec may not set them in `config:` or `sft:`)
OWNED = ("model", "data", "output_dir", "seed", "resume", "save_every", "keep_checkpoints", "save_final",
         "reward_fn", "reward_model", "eval_data", "candidates", "tokenizer", "threads", "progress")
#: +1: a larger value lets the policy move further from the SFT model (more KL budget); -1: a smaller one does
KNOB_DIRECTION = {"kl_coef": -1, "beta": -1, "lr": 1, "max_steps": 1, "sft_weight": -1, "nll_weight": -1,
                  "epochs": 1}


class TaskSettings(Strict):
    """The controlled-generation task: a registered task whose target is the continuation, and its true reward."""

    name: str = "steer_review"
    registry: list[str] = Field(default_factory=list, description=(
        "registry folders (relative to the spec file) holding the task; default: the bundled registry"))
    template: int = Field(0, ge=0, description="index of the zero-shot template that renders the prompts")
    reward: str = Field("flanmix.builtin.steering:reward", description="'module:function'(prompts, completions, rows)")
    sft_rows: int = Field(4000, ge=8, description="training rows (prompt + reference continuation) for SFT")
    train_prompts: int = Field(400, ge=4, description="prompts for the preference data and PPO (train split)")
    eval_prompts: int = Field(64, ge=2, description="held-out prompts (validation split)")


class ModelSettings(Strict):
    """The starting model: an init-model ladder rung with a tokenizer trained on the task's text, or a folder."""

    size: str | None = "tiny"
    vocab_size: int = Field(512, ge=263)
    path: str | None = Field(None, description="a local causal-LM folder (relative to the spec file)")

    @model_validator(mode="after")
    def _known(self) -> ModelSettings:
        if self.path is None and self.size not in SIZES:
            raise ValueError(f"unknown model size {self.size!r} (expected one of {', '.join(SIZES)})")
        return self


class PreferenceSettings(Strict):
    """Rankings labelled by the true reward on samples of the SFT model (the DPO paper's controlled setup)."""

    samples: int = Field(4, ge=2, description="SFT samples per training prompt, ranked by the true reward")
    temperature: float = Field(1.0, gt=0)


class EvalSettings(Strict):
    """How each run is measured on the held-out prompts."""

    samples: int = Field(2, ge=1, description="samples per held-out prompt (reward and KL are means over them)")
    max_new_tokens: int = Field(32, ge=1)
    checkpoints: int = Field(3, ge=1, description="evenly spaced checkpoints per run (the last is the final model)")
    temperatures: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0], min_length=1)
    batch_size: int = Field(64, ge=1)


class RunSweep(Strict):
    """One method at several values of one knob (every run starts from the same SFT model)."""

    method: Literal["ppo", "dpo", "ipo", "rrhf"]
    knob: str = Field(description="the stage config field swept (kl_coef, beta, lr, ...)")
    values: list[float] = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict, description="the stage config for every value")

    @model_validator(mode="after")
    def _check(self) -> RunSweep:
        if len(set(self.values)) != len(self.values):
            raise ValueError("values must not repeat")
        if self.knob in self.config:
            raise ValueError(f"{self.knob} is the swept knob; set it in values, not in config")
        return self

    @property
    def stage(self) -> str:
        """The training stage that runs this method."""
        return METHODS[self.method][0]

    def run_config(self, value: float) -> dict[str, Any]:
        """The stage config fields of the run at `value` (without the fields the study owns)."""
        knob_value: Any = int(value) if self.knob == "max_steps" else value
        return {**self.config, **METHODS[self.method][1], self.knob: knob_value}


class FrontierSpec(Strict):
    """A frontier YAML file."""

    name: str = "frontier"
    description: str = ""
    seed: int = 0
    threads: int | None = Field(1, ge=1, description="torch CPU threads for the whole study")
    task: TaskSettings = Field(default_factory=TaskSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    sft: dict[str, Any] = Field(default_factory=dict, description="SFT config fields (max_steps, lr, ...)")
    preferences: PreferenceSettings = Field(default_factory=PreferenceSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    runs: list[RunSweep] = Field(min_length=1)
    keep_models: bool = Field(False, description="keep each run's weights and checkpoints after evaluation")

    @model_validator(mode="after")
    def _steps(self) -> FrontierSpec:
        n = self.eval.checkpoints
        for sweep in self.runs:
            if "peft" in sweep.config:
                raise ValueError("the frontier evaluates full-weight checkpoints; peft adapters are not supported")
            for value in sweep.values:
                steps = sweep.run_config(value).get("max_steps")
                if not isinstance(steps, int) or steps % n:
                    raise ValueError(f"{sweep.method} needs max_steps (in config or as the knob), a multiple of "
                                     f"eval.checkpoints ({n}), so checkpoints are evenly spaced (got {steps})")
        return self


def load_spec(path: str | Path) -> tuple[FrontierSpec, YamlDoc]:
    """Read and validate a frontier YAML file, including each run's stage config (errors: file, line, field)."""
    doc = YamlDoc.read(path).require_mapping("a frontier spec", "keys task, model, sft, runs, ...")
    spec = doc.validate(FrontierSpec)
    placeholders = {"model": "m", "data": "d", "output_dir": "o"}
    _check_owned(doc, spec.sft, ["sft"])
    doc.validate(stage_config("sft"), {**spec.sft, **placeholders}, prefix=["sft"])
    for i, sweep in enumerate(spec.runs):
        _check_owned(doc, sweep.config, ["runs", i, "config"])
        extra = {"reward_fn": "m:f"} if sweep.stage == "ppo" else {}
        for value in sweep.values:
            doc.validate(stage_config(sweep.stage), {**sweep.run_config(value), **placeholders, **extra},
                         prefix=["runs", i, "config"])
    return spec, doc


def _check_owned(doc: YamlDoc, section: dict, loc: list) -> None:
    for key in section:
        if key in OWNED:
            raise FlanmixError("set by the frontier study for every run; it cannot be set here", file=doc.path,
                               line=doc.line_of([*loc, key]), field=".".join(str(p) for p in [*loc, key]))
