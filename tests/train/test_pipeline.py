"""Pipelines: sft -> rm -> dpo / rrhf / ppo from one YAML, stage references, resume, and bad input."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import yaml

from flanmix.cli import main
from flanmix.core.constants import STAGE_NAMES
from flanmix.core.errors import FlanmixError
from flanmix.preferences import load_preferences
from helpers import write_prefs
from trainers.config import LoopSettings
from trainers.pipeline import plan, run_pipeline
from trainers.rewards import load_reward_model
from trainers.rm import train as rm_train
from trainers.stages import POLICY_STAGES, REWARD_STAGES, stage_config, stage_module, stage_names

FAST = {"progress": False, "tensorboard": False, "log_every": 1, "batch_size": 8, "max_length": 48}


def _sft_rows(path, n=64):
    rng = random.Random(0)
    words = "alpha beta gamma delta red green blue cat dog fox".split()
    rows = []
    for _ in range(n):
        ws = [rng.choice(words) for _ in range(rng.randint(3, 5))]
        rows.append({"inputs": f"Reverse the words: {' '.join(ws)}\n", "targets": " ".join(reversed(ws))})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def inputs(tmp_path):
    return {"sft": _sft_rows(tmp_path / "sft.jsonl"), "prefs": write_prefs(tmp_path / "prefs.jsonl", n=48)}


def _write(tmp_path, model, stages, name="pipe.yaml", **top):
    doc = {"model": str(model), "output_dir": str(tmp_path / "runs"), "stages": stages, **top}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flanmix: error:"), err
    return err[0]


def test_sft_rm_dpo_pipeline_runs_and_resumes(tmp_path, tiny_model_dir, inputs, capsys):
    stages = [{"sft": {"data": str(inputs["sft"]), "max_steps": 4, "lr": 3e-3, **FAST}},
              {"rm": {"data": str(inputs["prefs"]), "max_steps": 4, "lr": 1e-3, **FAST}},
              {"dpo": {"data": str(inputs["prefs"]), "max_steps": 6, "save_every": 3, "keep_checkpoints": 3,
                       "lr": 1e-3, **FAST}}]
    pipe = _write(tmp_path, tiny_model_dir, stages)
    assert main(["train", str(pipe)]) == 0
    runs = tmp_path / "runs"
    for name in ("sft", "rm", "dpo"):
        marker = json.loads((runs / name / "COMPLETE").read_text())
        assert marker["name"] == name and (runs / name / "final").is_dir()
    # rm and dpo started from the SFT model; dpo's reference is its initial policy
    assert json.loads((runs / "rm" / "rm_config.json").read_text())["model"] == str(runs / "sft" / "final")
    assert json.loads((runs / "dpo" / "dpo_config.json").read_text())["model"] == str(runs / "sft" / "final")
    load_reward_model(runs / "rm" / "final")
    # the DPO stage dies after step 3: its marker, final model and the step-6 checkpoint are gone
    dpo_curve = [r["loss"] for r in map(json.loads, (runs / "dpo" / "metrics.jsonl").read_text().splitlines())
                 if "loss" in r]
    for p in ("COMPLETE", "final", "checkpoints/step-6"):
        shutil.rmtree(runs / "dpo" / p) if (runs / "dpo" / p).is_dir() else (runs / "dpo" / p).unlink()
    (runs / "dpo" / "metrics.jsonl").unlink()
    sft_mtime = (runs / "sft" / "COMPLETE").stat().st_mtime
    capsys.readouterr()
    assert main(["train", str(pipe)]) == 0
    out = capsys.readouterr().out
    assert "sft: complete, skipped" in out and "rm: complete, skipped" in out and "resumed from" in out
    assert (runs / "sft" / "COMPLETE").stat().st_mtime == sft_mtime and (runs / "dpo" / "COMPLETE").is_file()
    resumed = [r["loss"] for r in map(json.loads, (runs / "dpo" / "metrics.jsonl").read_text().splitlines())
               if "loss" in r]
    assert resumed == pytest.approx(dpo_curve[3:], abs=1e-6)
    # changing a finished stage's settings is an error, not a silent retrain or a stale skip
    stages[1]["rm"]["lr"] = 5e-4
    _write(tmp_path, tiny_model_dir, stages)
    assert main(["train", str(pipe)]) == 2
    assert "completed with different settings" in _err(capsys)


def test_rrhf_candidates_from_sft_scored_by_rm_then_ppo(tmp_path, tiny_model_dir, inputs):
    stages = [{"sft": {"data": str(inputs["sft"]), "max_steps": 3, "lr": 3e-3, **FAST}},
              {"rm": {"data": str(inputs["prefs"]), "max_steps": 3, **FAST}},
              {"rrhf": {"data": str(inputs["prefs"]), "max_steps": 3, "init": "sft", **FAST,
                        "candidates": {"sample_from": "sft", "k": 2, "max_new_tokens": 6, "max_prompts": 16}}},
              {"ppo": {"name": "ppo_rm", "data": str(inputs["prefs"]), "init": "sft", "max_steps": 2,
                       "rollout_batch_size": 4, "mini_batch_size": 4, "max_new_tokens": 4,
                       "progress": False, "tensorboard": False}}]
    pipe = _write(tmp_path, tiny_model_dir, stages)
    _, planned = plan(pipe)
    runs = tmp_path / "runs"
    rrhf, ppo = planned[2].config, planned[3].config
    assert rrhf.candidates.reward_model == str(runs / "rm" / "final")  # default: the latest rm stage
    assert rrhf.candidates.sample_from == str(runs / "sft" / "final")
    assert ppo.reward_model == str(runs / "rm" / "final") and ppo.model == str(runs / "sft" / "final")
    summary = run_pipeline(pipe)
    assert [s["status"] for s in summary] == ["trained"] * 4
    info = json.loads((runs / "rrhf" / "rrhf_config.json").read_text())
    assert info["train_groups"] + info["eval_groups"] >= 8
    assert (runs / "ppo_rm" / "final" / "critic").is_dir()


SFT_OK = {"sft": {"max_steps": 2, **FAST}}


@pytest.mark.parametrize("stages, message, at", [
    ([SFT_OK, {"dpo": {"bta": 0.1}}], "stages[1].dpo.bta: unknown key", "bta:"),
    ([SFT_OK, {"ppo": {"max_steps": 1}}], "stages[1].ppo.reward_model: ppo needs a reward_model", None),
    ([SFT_OK, {"ppo": {"max_steps": 1, "reward_model": "sft"}}], "names stage 'sft', a sft stage", "reward_model:"),
    ([SFT_OK, {"dpo": {"reference": "rm"}}], "reference names 'rm', which is not an earlier stage", "reference:"),
    ([SFT_OK, {"sft": {"name": "sft"}}], "stages[1].sft.name: duplicate stage name 'sft'", "name: sft"),
    ([{"kto": {}}], "stages[0]: unknown stage kind 'kto'", "kto:"),
    ([SFT_OK, {"rm": {"model": "x"}}], "stages[1].rm.model: 'model' is set by the pipeline", "model: x"),
])
def test_pipeline_validates_everything_before_training(tmp_path, tiny_model_dir, inputs, capsys, stages, message,
                                                       at):
    data = {"sft": str(inputs["sft"]), "rm": str(inputs["prefs"]), "dpo": str(inputs["prefs"]),
            "ppo": str(inputs["prefs"])}
    stages = [{kind: {"data": data[kind], **settings} if kind in data else settings}
              for entry in stages for kind, settings in entry.items()]
    pipe = _write(tmp_path, tiny_model_dir, stages)
    assert main(["train", str(pipe)]) == 2
    err = _err(capsys)
    assert err.startswith(f"flanmix: error: {pipe}:") and message in err
    if at is not None:  # the error names the line of the offending key
        line = int(err.split(f"{pipe}:")[1].split(":")[0])
        assert at in pipe.read_text().splitlines()[line - 1]
    assert not (tmp_path / "runs").exists()


def test_unknown_top_level_key_names_its_line(tmp_path, tiny_model_dir, capsys):
    pipe = tmp_path / "top.yaml"
    pipe.write_text(f"model: {tiny_model_dir}\nstages:\n  - sft: {{}}\nsteps: 3\n")
    assert main(["train", str(pipe)]) == 2
    assert _err(capsys) == f"flanmix: error: {pipe}:4: steps: unknown key; did you mean stages?"


def test_stage_registry_is_the_one_list_of_stages():
    assert stage_names() == list(STAGE_NAMES)
    assert set(POLICY_STAGES) | set(REWARD_STAGES) == set(STAGE_NAMES)
    for name in STAGE_NAMES:
        assert issubclass(stage_config(name), LoopSettings) and callable(stage_module(name).train)


def test_bad_preference_data_fails_the_stage_without_a_marker(tmp_path, tiny_model_dir, inputs, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(inputs["prefs"].read_text() + json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"}) + "\n")
    stages = [{"sft": {"data": str(inputs["sft"]), "max_steps": 2, **FAST}},
              {"rm": {"data": str(bad), "max_steps": 2, **FAST}}]
    pipe = _write(tmp_path, tiny_model_dir, stages)
    assert main(["train", str(pipe)]) == 2
    assert "bad.jsonl:49" in _err(capsys) and not (tmp_path / "runs").exists()  # found before sft trains
    # the stage itself refuses it too (when run alone), and nothing is marked complete
    with pytest.raises(FlanmixError, match="identical"):
        rm_train({"model": str(tiny_model_dir), "data": str(bad), "output_dir": str(tmp_path / "rm"),
                  "max_steps": 1})
    assert not (tmp_path / "rm" / "checkpoints").exists() and not (tmp_path / "rm" / "final").exists()
    for rows, msg in [({"prompt": "p", "chosen": "", "rejected": "x"}, "empty response"),
                      ({"prompt": "p", "responses": ["a", "b"], "scores": [2, 2]}, "all scores are equal")]:
        bad.write_text(json.dumps(rows) + "\n")
        with pytest.raises(FlanmixError, match=msg):
            load_preferences(bad)


def test_shipped_pipelines_are_valid(repo_root):
    cfg, stages = plan(repo_root / "configs" / "pipelines" / "demo.yaml")
    assert [s.kind for s in stages] == ["sft", "rm", "dpo"]
    assert stages[2].config.model == stages[1].config.model == str(stages[0].out / "final")
    _, ppo = plan(repo_root / "configs" / "pipelines" / "ppo.yaml")
    assert ppo[2].config.reward_model == str(ppo[1].out / "final")
    _, rrhf = plan(repo_root / "configs" / "pipelines" / "rrhf.yaml")
    assert rrhf[2].config.candidates.sample_from == str(rrhf[0].out / "final")
