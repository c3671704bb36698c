"""`flanmix train`: run one training stage from a YAML config, or a whole pipeline.

    flanmix train sft --config sft.yaml [--set lr=3e-4 --set max_steps=100]
    flanmix train pipeline.yaml
    accelerate launch --num_processes 2 -m flanmix train sft --config sft.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flanmix.core.errors import FlanmixError
from flanmix.core.yamlio import load_yaml
from trainers.config import is_main_process
from trainers.stages import run_stage, stage_names  # the registry is torch-free; a stage imports torch when it runs

STAGES = ", ".join(stage_names())


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help=f"train one stage ({STAGES}) or run a pipeline YAML",
        description="Run a training stage from its YAML config (`flanmix train sft --config sft.yaml`) or a "
                    "pipeline of stages (`flanmix train pipeline.yaml`). Runs under `accelerate launch` too.",
    )
    p.add_argument("target", help=f"a stage name ({STAGES}) or a pipeline .yaml file")
    p.add_argument("--config", help="the stage's YAML config (required with a stage name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (value parsed as YAML); repeatable")
    p.set_defaults(func=_run)


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FlanmixError(f"bad --set {item!r}", field="set", expected="KEY=VALUE")
        out[key.strip()] = load_yaml(value, path=f"--set {key.strip()}")
    return out


def _run(args: argparse.Namespace) -> int:
    target = args.target
    is_file = target.endswith((".yaml", ".yml")) or Path(target).is_file()
    if is_file:
        if args.config or args.set:
            raise FlanmixError("--config/--set apply to a single stage, not to a pipeline file", field="config")
        if not Path(target).is_file():
            raise FlanmixError("pipeline file not found", file=target)
        from trainers.pipeline import run_pipeline  # torch and transformers: imported only when a run starts

        run_pipeline(target)
        return 0
    if target not in stage_names():
        raise FlanmixError(f"unknown stage {target!r}", expected=" | ".join(stage_names()) + " or a pipeline .yaml")
    if not args.config:
        raise FlanmixError(f"`flanmix train {target}` needs --config FILE", field="config")
    result = run_stage(target, args.config, **_overrides(args.set))
    if result is not None and getattr(result, "final_dir", None) and is_main_process():
        print(f"[{target}] done: {result.steps} steps; model in {result.final_dir}")
    return 0
