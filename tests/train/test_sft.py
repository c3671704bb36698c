"""SFT end to end on the tiny model: YAML/CLI, data formats, resume, and one-line errors for bad input."""

from __future__ import annotations

import json
import random
import shutil
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from flanmix.cli import main
from trainers.config import load_config
from trainers.sft import SFTConfig, train


def _rows(n=96, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        out.append({"inputs": f"Question: What is {a} + {b}?\nAnswer:", "targets": f" {a + b}"})
    return out


@pytest.fixture()
def jsonl(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return p


def _yaml(tmp_path, model, data, **extra):
    cfg = {"model": str(model), "data": str(data), "output_dir": str(tmp_path / "run"), "max_steps": 6,
           "batch_size": 4, "max_length": 48, "log_every": 1, "progress": False, "tensorboard": False,
           "lr": 3e-3, **extra}
    p = tmp_path / "sft.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flanmix: error:"), err
    return err[0]


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_cli_trains_and_saves_loadable_model(tmp_path, tiny_model_dir, jsonl, capsys):
    cfg = _yaml(tmp_path, tiny_model_dir, jsonl, max_steps=12, eval_data=str(jsonl), eval_every=6,
                tensorboard=True)
    assert main(["train", "sft", "--config", str(cfg)]) == 0
    run = tmp_path / "run"
    losses = [m["loss"] for m in _metrics(run) if "loss" in m]
    evals = [m["eval_loss"] for m in _metrics(run) if "eval_loss" in m]
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert len(evals) == 2 and evals[1] < evals[0]
    AutoModelForCausalLM.from_pretrained(run / "final")
    assert AutoTokenizer.from_pretrained(run / "final").eos_token_id is not None
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["kept"] == 96 and stats["truncated"] == 0
    assert "done: 12 steps" in capsys.readouterr().out


def test_sft_python_api_packing_mixture_folder_and_resume(tmp_path, tiny_model_dir):
    mix = tmp_path / "mix"
    (mix / "shards").mkdir(parents=True)
    rows = _rows(120)
    for i in range(2):
        pq.write_table(pa.Table.from_pylist(rows[i * 60:(i + 1) * 60]), mix / "shards" / f"part-{i:05d}.parquet")
    (mix / "manifest.json").write_text("{}")
    common = dict(model=str(tiny_model_dir), data=str(mix), batch_size=2, max_length=64, packing=True,
                  log_every=1, progress=False, tensorboard=False, max_steps=6, lr=3e-3)
    full = train(dict(common, output_dir=str(tmp_path / "full"), save_every=3))
    ref = [h["loss"] for h in full.history]
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-3", tmp_path / "again" / "checkpoints" / "step-3")
    again = train(dict(common, output_dir=str(tmp_path / "again"), save_every=3))
    assert [h["loss"] for h in again.history] == ref[3:]


def test_sft_chat_messages(tmp_path, tiny_model_dir):
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"say {i}"},
                                                  {"role": "assistant", "content": f"{i}"}]}) + "\n"
                         for i in range(16)))
    res = train(dict(model=str(tiny_model_dir), data=str(p), output_dir=str(tmp_path / "r"), max_steps=2,
                     batch_size=4, progress=False, tensorboard=False, log_every=1))
    assert res.steps == 2


def test_pipeline_file_dispatches_to_run_pipeline(tmp_path, monkeypatch):
    called = []
    fake = types.ModuleType("trainers.pipeline")
    fake.run_pipeline = lambda path: called.append(path)
    monkeypatch.setitem(sys.modules, "trainers.pipeline", fake)
    p = tmp_path / "pipe.yaml"
    p.write_text("model: x\nstages: []\n")
    assert main(["train", str(p)]) == 0
    assert called == [str(p)]


# ----------------------------------------------------------------------------------------------- bad input


def test_typo_in_training_yaml_names_file_line_and_field(tmp_path, tiny_model_dir, jsonl, capsys):
    cfg = _yaml(tmp_path, tiny_model_dir, jsonl, learning_rate=1)
    line = next(i for i, text in enumerate(cfg.read_text().splitlines(), 1) if text.startswith("learning_rate:"))
    assert main(["train", "sft", "--config", str(cfg)]) == 2
    assert _err(capsys) == f"flanmix: error: {cfg}:{line}: learning_rate: unknown key"


@pytest.mark.parametrize("argv, message", [
    (["train", "sft"], "`flanmix train sft` needs --config FILE"),
    (["train", "nosuchstage", "--config", "x.yaml"], "unknown stage 'nosuchstage'"),
    (["train", "sft", "--config", "missing.yaml"], "missing.yaml: file not found"),
    (["train", "sft", "--config", "x.yaml", "--set", "lr"], "bad --set 'lr'"),
])
def test_bad_command_lines(argv, message, capsys):
    assert main(argv) == 2
    assert message in _err(capsys)


def test_bad_value_and_bad_override(tmp_path, tiny_model_dir, jsonl, capsys):
    cfg = _yaml(tmp_path, tiny_model_dir, jsonl, lr="fast")
    assert main(["train", "sft", "--config", str(cfg)]) == 2
    assert f"{cfg}:" in (err := _err(capsys)) and "lr: Input should be a valid number" in err
    cfg = _yaml(tmp_path, tiny_model_dir, jsonl)
    assert main(["train", "sft", "--config", str(cfg), "--set", "packing_mode=4d"]) == 2
    assert "packing_mode: unknown key" in _err(capsys)


@pytest.mark.parametrize("breakage, message", [
    ("missing", "model folder not found"),
    ("weights", "cannot load model"),
    ("config", "config.json is not valid JSON"),
])
def test_missing_and_corrupt_model_folder(tmp_path, tiny_model_dir, jsonl, capsys, breakage, message):
    bad = tmp_path / "bad"
    if breakage != "missing":
        shutil.copytree(tiny_model_dir, bad)
    if breakage == "weights":
        (bad / "model.safetensors").write_bytes(b"this is not a safetensors file")
    if breakage == "config":
        (bad / "config.json").write_text("{not json")
    assert main(["train", "sft", "--config", str(_yaml(tmp_path, bad, jsonl))]) == 2
    assert message in _err(capsys)


def test_tokenizer_without_eos(tmp_path, tiny_model_dir, jsonl, capsys):
    bad = tmp_path / "noeos"
    shutil.copytree(tiny_model_dir, bad)
    cfg_path = bad / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["eos_token"] = None
    cfg_path.write_text(json.dumps(cfg))
    assert main(["train", "sft", "--config", str(_yaml(tmp_path, bad, jsonl))]) == 2
    assert "tokenizer has no EOS token" in _err(capsys)


def test_dataset_missing_columns(tmp_path, tiny_model_dir, capsys):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n")
    assert main(["train", "sft", "--config", str(_yaml(tmp_path, tiny_model_dir, p))]) == 2
    assert "missing columns" in _err(capsys)
    assert main(["train", "sft", "--config", str(_yaml(tmp_path, tiny_model_dir, tmp_path / "none.jsonl"))]) == 2
    assert "data path not found" in _err(capsys)


def test_over_max_length_truncate_or_drop(tmp_path, tiny_model_dir, capsys):
    p = tmp_path / "d.jsonl"
    rows = _rows(8) + [{"inputs": "Question: long one", "targets": " word" * 80}] * 2
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["train", "sft", "--config", str(_yaml(tmp_path, tiny_model_dir, p, max_steps=1))]) == 0
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert (stats["kept"], stats["truncated"], stats["dropped"]) == (10, 2, 0)
    assert "2 truncated" in capsys.readouterr().out
    cfg = _yaml(tmp_path, tiny_model_dir, p, max_steps=1)
    assert main(["train", "sft", "--config", str(cfg), "--set", "truncation=drop",
                 "--set", f"output_dir={tmp_path / 'r2'}"]) == 0
    stats = json.loads((tmp_path / "r2" / "data_stats.json").read_text())
    assert (stats["kept"], stats["truncated"], stats["dropped"]) == (8, 0, 2)


def test_nan_loss_exit_2_with_last_checkpoint(tmp_path, tiny_model_dir, jsonl, capsys):
    cfg = _yaml(tmp_path, tiny_model_dir, jsonl, lr=1e12, max_grad_norm=None, save_every=1, max_steps=10)
    assert main(["train", "sft", "--config", str(cfg)]) == 2
    line = _err(capsys)
    assert "NaN/inf at step 2" in line and "last good checkpoint" in line and "step-1" in line
    assert (tmp_path / "run" / "checkpoints" / "step-1" / "loop_state.json").exists()


def test_example_config_is_valid(repo_root):
    cfg = load_config(repo_root / "configs" / "sft.yaml", SFTConfig)
    assert cfg.packing and cfg.output_dir == "runs/sft"
    assert load_config(repo_root / "configs" / "sft.yaml", SFTConfig, {"lr": 0.5}).lr == 0.5


def test_gradient_checkpointing_gives_the_same_losses(tmp_path, tiny_model_dir, jsonl):
    common = dict(model=str(tiny_model_dir), data=str(jsonl), max_steps=3, batch_size=4, max_length=48,
                  log_every=1, progress=False, tensorboard=False, mixed_precision="no", save_final=False)
    plain = [h["loss"] for h in train(dict(common, output_dir=str(tmp_path / "a"))).history]
    ckpt = [h["loss"] for h in train(dict(common, output_dir=str(tmp_path / "b"),
                                          gradient_checkpointing=True)).history]
    assert ckpt == pytest.approx(plain, abs=1e-5)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, tiny_model_dir):
    """A real crash: `flanmix train sft` in its own process, SIGKILLed once its second checkpoint is on disk (mid
    step, with a later step possibly half-logged); running the same command again resumes and ends with the same
    logged losses and the same final weights as a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import time

    import torch

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(96)))

    def command(name: str) -> list[str]:
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({
            "model": str(tiny_model_dir), "data": str(data), "output_dir": str(tmp_path / name), "max_steps": 40,
            "batch_size": 4, "max_length": 64, "save_every": 4, "log_every": 1, "lr": 3e-3, "tensorboard": False,
            "progress": False, "threads": 1, "keep_checkpoints": 20}))
        return [sys.executable, "-m", "flanmix", "train", "sft", "--config", str(config)]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(command("full"), check=True, capture_output=True, env=env, timeout=600)
    victim = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed" / "checkpoints" / "step-8").is_dir():
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "final").exists()
    subprocess.run(command("killed"), check=True, capture_output=True, env=env, timeout=600)
    full, resumed = (_metrics(tmp_path / name) for name in ("full", "killed"))
    assert [(m["step"], m["loss"]) for m in resumed if "loss" in m] == [(m["step"], m["loss"]) for m in full
                                                                        if "loss" in m]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
