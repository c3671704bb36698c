"""Pipelines: `sft → rm → (ppo | rrhf | dpo)` from one YAML file, resumable stage by stage.

    model: runs/tiny                 # the starting model folder
    output_dir: runs/demo            # each stage writes <output_dir>/<name>/ (its model in .../final)
    seed: 0
    stages:
      - sft:  {data: out/demo, max_steps: 200}
      - rm:   {data: prefs/train.jsonl}                      # init: the latest policy (here: sft)
      - dpo:  {data: prefs/train.jsonl, beta: 0.1}           # init and reference: sft
      # - ppo:  {data: prefs/prompts.jsonl, reward_model: rm, max_steps: 100}
      # - rrhf: {data: prefs/train.jsonl, candidates: {sample_from: sft, reward_model: rm, k: 4}}

A stage entry is `{kind: {settings}}`; the settings are the stage's own config (see `trainers.<kind>`) without
`model` and `output_dir`, plus `name` (default: the kind; unique) and `init` (the model to start from). `init`,
`reference`, `critic`, `reward_model`, `candidates.sample_from` and `candidates.reward_model` may name an earlier
stage (its final model is used) or be a folder. Defaults: `init` is the latest policy stage (sft/dpo/rrhf/ppo) or
`model`; a PPO stage without `reward_fn` — and RRHF candidates — use the latest rm stage as reward model.

Every stage is validated before anything trains (unknown keys are errors). A finished stage gets
`<output_dir>/<name>/COMPLETE` (JSON, written atomically after the final model); a rerun skips completed stages
and resumes an unfinished one from its last checkpoint. A completed stage whose settings changed is an error
(delete its folder to retrain it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from flanmix.core.errors import FlanmixError

KINDS = ("sft", "rm", "dpo", "rrhf", "ppo")
POLICY_KINDS = ("sft", "dpo", "rrhf", "ppo")
MARKER = "COMPLETE"
# settings that may name an earlier stage, and the kinds of stage they may name
STAGE_REFS = {
    "init": POLICY_KINDS + ("rm",),
    "reference": POLICY_KINDS,
    "critic": ("rm",) + POLICY_KINDS,
    "reward_model": ("rm",),
    "candidates.sample_from": POLICY_KINDS,
    "candidates.reward_model": ("rm",),
}


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    output_dir: Optional[str] = None             # default: runs/<pipeline file stem>
    seed: int = 0
    stages: list[dict[str, Any]] = Field(min_length=1)


class PlannedStage(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: str
    name: str
    out: Path
    config: Any                                  # the stage's validated config object
    fingerprint: str


def _config_class(kind: str):
    from trainers.stages import stage_module

    module = stage_module(kind)
    return {"sft": "SFTConfig", "rm": "RMConfig", "dpo": "DPOConfig", "rrhf": "RRHFConfig",
            "ppo": "PPOConfig"}[kind], module


def _get(d: dict, dotted: str):
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _set(d: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        d = d[part]
    d[parts[-1]] = value


def plan(path: str | Path) -> tuple[PipelineConfig, list[PlannedStage]]:
    """Read and validate a pipeline file; resolve stage references. Nothing is trained or written."""
    from trainers.config import read_yaml, validate

    path = Path(path)
    raw = read_yaml(path)
    cfg = validate(raw, PipelineConfig, source=path)
    root = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / path.stem
    planned: list[PlannedStage] = []
    outputs: dict[str, tuple[str, Path]] = {}  # name -> (kind, final model folder)
    last_policy: Path = Path(cfg.model)
    last_rm: Path | None = None
    for i, entry in enumerate(cfg.stages):
        where = f"stages.{i}"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise FlanmixError("a stage is a mapping with one key, the stage kind", file=path, field=where,
                               expected="{sft|rm|dpo|rrhf|ppo: {settings}}")
        kind, settings = next(iter(entry.items()))
        if kind not in KINDS:
            raise FlanmixError(f"unknown stage kind {kind!r}", file=path, field=where, expected=" | ".join(KINDS))
        settings = dict(settings or {})
        if not all(isinstance(k, str) for k in settings):
            raise FlanmixError("stage settings must be a mapping", file=path, field=f"{where}.{kind}")
        for forbidden in ("model", "output_dir"):
            if forbidden in settings:
                raise FlanmixError(f"'{forbidden}' is set by the pipeline", file=path, field=f"{where}.{kind}."
                                   f"{forbidden}", expected="'init' to choose the starting model")
        name = str(settings.pop("name", kind))
        if name in outputs:
            raise FlanmixError(f"duplicate stage name {name!r}", file=path, field=f"{where}.{kind}.name",
                               expected="unique names (set name:)")
        # defaults that point at earlier stages
        settings.setdefault("init", None)
        if kind == "ppo" and settings.get("reward_model") is None and settings.get("reward_fn") is None:
            if last_rm is None:
                raise FlanmixError("ppo needs a reward_model (an earlier rm stage or a folder) or a reward_fn",
                                   file=path, field=f"{where}.ppo.reward_model")
            settings["reward_model"] = str(last_rm)
        cand = settings.get("candidates")
        if kind == "rrhf" and isinstance(cand, dict):
            cand = settings["candidates"] = dict(cand)
            if cand.get("reward_model") is None and cand.get("reward_fn") is None:
                if last_rm is None:
                    raise FlanmixError("rrhf candidates need a reward_model (an earlier rm stage) or a reward_fn",
                                       file=path, field=f"{where}.rrhf.candidates.reward_model")
                cand["reward_model"] = str(last_rm)
        for key, allowed in STAGE_REFS.items():
            value = _get(settings, key)
            if not isinstance(value, str):
                continue
            if value in outputs:
                ref_kind, ref_out = outputs[value]
                if ref_kind not in allowed:
                    raise FlanmixError(f"{key} names stage {value!r}, a {ref_kind} stage", file=path,
                                       field=f"{where}.{kind}.{key}", expected=f"a {' / '.join(allowed)} stage")
                _set(settings, key, str(ref_out))
            elif value in KINDS or value == name:
                raise FlanmixError(f"{key} names {value!r}, which is not an earlier stage", file=path,
                                   field=f"{where}.{kind}.{key}", expected="the name of an earlier stage or a folder")
        init = settings.pop("init") or str(last_policy)
        out = root / name
        cls_name, module = _config_class(kind)
        cls = getattr(module, cls_name)
        settings.setdefault("seed", cfg.seed)
        data = {**settings, "model": init, "output_dir": str(out)}
        try:
            stage_cfg = validate(data, cls, source=path)
        except FlanmixError as err:
            raise FlanmixError(err.message, file=path, field=f"{where}.{kind}" + (f".{err.field}" if err.field
                                                                                   else ""),
                               expected=err.expected) from None
        fingerprint = hashlib.sha256(json.dumps({"kind": kind, **stage_cfg.model_dump()}, sort_keys=True,
                                                default=str).encode()).hexdigest()[:16]
        planned.append(PlannedStage(kind=kind, name=name, out=out, config=stage_cfg, fingerprint=fingerprint))
        outputs[name] = (kind, out / "final")
        if kind in POLICY_KINDS:
            last_policy = out / "final"
        if kind == "rm":
            last_rm = out / "final"
    return cfg, planned


def _write_marker(stage: PlannedStage, result) -> None:
    tmp = stage.out / f".{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"stage": stage.kind, "name": stage.name, "fingerprint": stage.fingerprint,
                               "final_dir": str(stage.out / "final"), "steps": getattr(result, "steps", None),
                               "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    os.replace(tmp, stage.out / MARKER)


def preflight(stage: PlannedStage) -> None:
    """Read and validate a stage's preference / prompt files now, so bad rows stop the pipeline before any
    stage trains (the stage re-reads them when it runs)."""
    from trainers.ppo import read_prompts
    from flanmix.preferences import load_preferences

    cfg = stage.config
    if stage.kind in ("rm", "dpo") or (stage.kind == "rrhf" and cfg.candidates is None):
        for f in (cfg.data, cfg.eval_data):
            if f:
                load_preferences(f)
    elif stage.kind == "rrhf" and cfg.data:
        load_preferences(cfg.data)
    elif stage.kind == "ppo":
        read_prompts(cfg.data)


def stage_status(stage: PlannedStage) -> str:
    """'complete', 'changed' (complete with other settings), 'partial' (checkpoints only) or 'new'."""
    marker = stage.out / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        return "complete" if info.get("fingerprint") == stage.fingerprint else "changed"
    return "partial" if (stage.out / "checkpoints").is_dir() else "new"


def run_pipeline(path: str | Path) -> list[dict]:
    """Run (or resume) every stage of a pipeline file; returns one summary dict per stage."""
    from trainers.stages import stage_module

    _, stages = plan(path)
    for st in stages:  # fail before training anything
        if stage_status(st) == "changed":
            raise FlanmixError(f"stage {st.name!r} was completed with different settings; delete {st.out} to "
                               "retrain it", file=path, field=f"stages.{st.name}")
    for st in stages:
        if stage_status(st) != "complete":
            preflight(st)
    summary = []
    for st in stages:
        status = stage_status(st)
        if status == "complete":
            print(f"[pipeline] {st.name}: complete, skipped ({st.out / 'final'})", flush=True)
            summary.append({"name": st.name, "kind": st.kind, "status": "skipped", "final_dir": str(st.out / "final")})
            continue
        print(f"[pipeline] {st.name}: {'resuming' if status == 'partial' else 'starting'} {st.kind} "
              f"from {st.config.model}", flush=True)
        start = time.perf_counter()
        result = stage_module(st.kind).train(st.config)
        _write_marker(st, result)
        summary.append({"name": st.name, "kind": st.kind, "status": "trained", "steps": result.steps,
                        "seconds": round(time.perf_counter() - start, 2), "final_dir": result.final_dir})
        print(f"[pipeline] {st.name}: done in {summary[-1]['seconds']} s ({result.steps} steps)", flush=True)
    return summary
