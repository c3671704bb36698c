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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from flanmix.core.atomic import write_text
from flanmix.core.errors import FlanmixError
from flanmix.core.strict import Strict
from flanmix.core.yamlio import YamlDoc, format_loc
from flanmix.preferences import load_preferences
from trainers.preference import read_prompts
from trainers.stages import POLICY_STAGES, REWARD_STAGES, run_stage, stage_config, stage_names

MARKER = "COMPLETE"
# settings that may name an earlier stage, and the kinds of stage they may name
STAGE_REFS = {
    "init": POLICY_STAGES + REWARD_STAGES,
    "reference": POLICY_STAGES,
    "critic": REWARD_STAGES + POLICY_STAGES,
    "reward_model": REWARD_STAGES,
    "candidates.sample_from": POLICY_STAGES,
    "candidates.reward_model": REWARD_STAGES,
}


class PipelineConfig(Strict):
    """The top level of a pipeline file."""

    model: str
    output_dir: str | None = None  # default: runs/<pipeline file stem>
    seed: int = 0
    stages: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedStage:
    """One stage of a planned pipeline: its validated config, output folder and settings fingerprint."""

    kind: str
    name: str
    out: Path
    config: Any  # the stage's validated config object
    fingerprint: str


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


def _error(doc: YamlDoc, loc: list, message: str, expected: str | None = None) -> FlanmixError:
    """A FlanmixError at `loc` (a path into the pipeline file), with its line."""
    return FlanmixError(message, file=doc.path, line=doc.line_of(loc), field=format_loc(loc), expected=expected)


def _read_entry(doc: YamlDoc, i: int, entry: Any, taken: dict) -> tuple[str, str, dict]:
    """(kind, name, settings) of stage entry `i` (`{kind: {settings}}`), checked."""
    if not isinstance(entry, dict) or len(entry) != 1:
        raise _error(doc, ["stages", i], "a stage is a mapping with one key, the stage kind",
                     expected="{" + "|".join(stage_names()) + ": {settings}}")
    kind, settings = next(iter(entry.items()))
    if kind not in stage_names():
        raise _error(doc, ["stages", i], f"unknown stage kind {kind!r}", expected=" | ".join(stage_names()))
    settings = dict(settings or {})
    if not all(isinstance(k, str) for k in settings):
        raise _error(doc, ["stages", i, kind], "stage settings must be a mapping")
    for forbidden in ("model", "output_dir"):
        if forbidden in settings:
            raise _error(doc, ["stages", i, kind, forbidden], f"'{forbidden}' is set by the pipeline",
                         expected="'init' to choose the starting model")
    name = str(settings.pop("name", kind))
    if name in taken:
        raise _error(doc, ["stages", i, kind, "name"], f"duplicate stage name {name!r}",
                     expected="unique names (set name:)")
    return kind, name, settings


def _default_reward_models(doc: YamlDoc, i: int, kind: str, settings: dict, last_rm: Path | None) -> None:
    """A PPO stage without a reward — and RRHF candidates — use the latest rm stage."""
    if kind == "ppo" and settings.get("reward_model") is None and settings.get("reward_fn") is None:
        if last_rm is None:
            raise _error(doc, ["stages", i, "ppo", "reward_model"],
                         "ppo needs a reward_model (an earlier rm stage or a folder) or a reward_fn")
        settings["reward_model"] = str(last_rm)
    cand = settings.get("candidates")
    if kind == "rrhf" and isinstance(cand, dict):
        cand = settings["candidates"] = dict(cand)
        if cand.get("reward_model") is None and cand.get("reward_fn") is None:
            if last_rm is None:
                raise _error(doc, ["stages", i, "rrhf", "candidates", "reward_model"],
                             "rrhf candidates need a reward_model (an earlier rm stage) or a reward_fn")
            cand["reward_model"] = str(last_rm)


def _resolve_refs(doc: YamlDoc, i: int, kind: str, name: str, settings: dict, outputs: dict) -> None:
    """Replace settings that name an earlier stage by that stage's final model folder."""
    for key, allowed in STAGE_REFS.items():
        value = _get(settings, key)
        if not isinstance(value, str):
            continue
        loc = ["stages", i, kind, *key.split(".")]
        if value in outputs:
            ref_kind, ref_out = outputs[value]
            if ref_kind not in allowed:
                raise _error(doc, loc, f"{key} names stage {value!r}, a {ref_kind} stage",
                             expected=f"a {' / '.join(allowed)} stage")
            _set(settings, key, str(ref_out))
        elif value in stage_names() or value == name:
            raise _error(doc, loc, f"{key} names {value!r}, which is not an earlier stage",
                         expected="the name of an earlier stage or a folder")


def plan(path: str | Path) -> tuple[PipelineConfig, list[PlannedStage]]:
    """Read and validate a pipeline file; resolve stage references. Nothing is trained or written."""
    path = Path(path)
    doc = YamlDoc.read(path)
    if not isinstance(doc.data, dict):
        raise FlanmixError("a pipeline file must be a mapping", file=path, expected="model:, stages: ...")
    cfg = doc.validate(PipelineConfig)
    root = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / path.stem
    planned: list[PlannedStage] = []
    outputs: dict[str, tuple[str, Path]] = {}  # name -> (kind, final model folder)
    last_policy: Path = Path(cfg.model)
    last_rm: Path | None = None
    for i, entry in enumerate(cfg.stages):
        kind, name, settings = _read_entry(doc, i, entry, outputs)
        settings.setdefault("init", None)
        _default_reward_models(doc, i, kind, settings, last_rm)
        _resolve_refs(doc, i, kind, name, settings, outputs)
        init = settings.pop("init") or str(last_policy)
        out = root / name
        settings.setdefault("seed", cfg.seed)
        data = {**settings, "model": init, "output_dir": str(out)}
        stage_cfg = doc.validate(stage_config(kind), data, prefix=["stages", i, kind])
        fingerprint = hashlib.sha256(json.dumps({"kind": kind, **stage_cfg.model_dump()}, sort_keys=True,
                                                default=str).encode()).hexdigest()[:16]
        planned.append(PlannedStage(kind=kind, name=name, out=out, config=stage_cfg, fingerprint=fingerprint))
        outputs[name] = (kind, out / "final")
        if kind in POLICY_STAGES:
            last_policy = out / "final"
        if kind in REWARD_STAGES:
            last_rm = out / "final"
    return cfg, planned


def _write_marker(stage: PlannedStage, result) -> None:
    write_text(stage.out / MARKER, json.dumps(
        {"stage": stage.kind, "name": stage.name, "fingerprint": stage.fingerprint,
         "final_dir": str(stage.out / "final"), "steps": getattr(result, "steps", None),
         "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))


def preflight(stage: PlannedStage) -> None:
    """Read and validate a stage's preference / prompt files now, so bad rows stop the pipeline before any
    stage trains (the stage re-reads them when it runs)."""
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
        result = run_stage(st.kind, st.config)
        _write_marker(st, result)
        summary.append({"name": st.name, "kind": st.kind, "status": "trained", "steps": result.steps,
                        "seconds": round(time.perf_counter() - start, 2), "final_dir": result.final_dir})
        print(f"[pipeline] {st.name}: done in {summary[-1]['seconds']} s ({result.steps} steps)", flush=True)
    return summary
