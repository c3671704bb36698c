"""The stage registry: every training stage by name (`flanmix.core.constants.STAGE_NAMES`), used by the CLI
(`flanmix train NAME --config FILE`), pipelines and ablations.

A stage `NAME` is the module `trainers.NAME`; it exposes `train(config, **overrides) -> TrainResult` (config: a YAML
path, a mapping or its config object; overrides: keyword config fields) and its config class (a `LoopSettings`
subclass). Modules are imported on first use, so listing names costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flanmix.core.constants import STAGE_NAMES
from flanmix.core.errors import FlanmixError


@dataclass(frozen=True)
class StageInfo:
    """Where a stage lives and what it makes."""

    module: str  # the module with train() and the config class
    config: str  # the config class's name in that module
    makes: str   # "policy" (a causal LM) or "reward_model" (a scalar-head model)


_INFO = {
    "sft": StageInfo("trainers.sft", "SFTConfig", "policy"),
    "rm": StageInfo("trainers.rm", "RMConfig", "reward_model"),
    "dpo": StageInfo("trainers.dpo", "DPOConfig", "policy"),
    "rrhf": StageInfo("trainers.rrhf", "RRHFConfig", "policy"),
    "ppo": StageInfo("trainers.ppo", "PPOConfig", "policy"),
}
#: every stage, in the order of STAGE_NAMES (a name without an entry above fails here, at import)
STAGES: dict[str, StageInfo] = {name: _INFO[name] for name in STAGE_NAMES}

#: stages whose output is a policy (a causal LM) / a reward model
POLICY_STAGES: tuple[str, ...] = tuple(n for n, s in STAGES.items() if s.makes == "policy")
REWARD_STAGES: tuple[str, ...] = tuple(n for n, s in STAGES.items() if s.makes == "reward_model")


def stage_names() -> list[str]:
    """Registered stage names, in pipeline order."""
    return list(STAGES)


def stage_info(name: str) -> StageInfo:
    """The registry entry of stage `name` (a FlanmixError naming the known stages otherwise)."""
    if name not in STAGES:
        raise FlanmixError(f"unknown stage {name!r}", field="stage", expected=" | ".join(STAGES))
    return STAGES[name]


def stage_module(name: str) -> ModuleType:
    """Import and return the module of stage `name`."""
    return importlib.import_module(stage_info(name).module)


def stage_config(name: str) -> type:
    """The config class of stage `name` (e.g. `SFTConfig`)."""
    return getattr(stage_module(name), stage_info(name).config)


def run_stage(name: str, config: str | Path | dict | Any, **overrides: Any):
    """Run one stage from a config (YAML path, mapping or config object); returns its TrainResult."""
    return stage_module(name).train(config, **overrides)
