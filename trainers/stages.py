"""Stage registry: stage name -> module path.

A registered module exposes `train(config, **overrides) -> trainers.loop.TrainResult`, where `config` is a YAML
path, a mapping or the module's config object, and overrides are keyword config fields. `flanmix train NAME
--config FILE` and pipelines find stages here. Modules are imported lazily, so listing names costs nothing.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from flanmix.core.errors import FlanmixError

STAGES: dict[str, str] = {
    "sft": "trainers.sft",
    "rm": "trainers.rm",
    "dpo": "trainers.dpo",
    "rrhf": "trainers.rrhf",
    "ppo": "trainers.ppo",
}


def stage_names() -> list[str]:
    """Registered stage names."""
    return list(STAGES)


def stage_module(name: str) -> ModuleType:
    """Import and return the module of stage `name`."""
    if name not in STAGES:
        raise FlanmixError(f"unknown stage {name!r}", field="stage", expected=" | ".join(STAGES))
    return importlib.import_module(STAGES[name])


def run_stage(name: str, config: str | Path | dict | Any, **overrides: Any):
    """Run one stage from a config (YAML path, mapping or config object)."""
    module = stage_module(name)
    fn = getattr(module, "train", None)
    if fn is None:
        raise FlanmixError(f"stage {name!r} ({STAGES[name]}) has no train() entry point", field="stage")
    return fn(config, **overrides)
