"""Multi-process training on CPU (gloo): `accelerate launch` with 2 processes, plain DDP and DeepSpeed ZeRO-2,
gives the same losses and weights as one process with the same global batch."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from trainers.sft import train

STEPS = 3
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("dist")
    rng = random.Random(0)
    data = root / "train.jsonl"
    with data.open("w") as f:
        for _ in range(64):
            a, b = rng.randint(0, 99), rng.randint(0, 999)
            targets = " ".join([str(a + b)] * rng.randint(1, 4))
            f.write(json.dumps({"inputs": f"What is {a} + {b}?", "targets": targets}) + "\n")
    base = {"model": str(tiny_model_dir), "data": str(data), "max_steps": STEPS, "max_length": 48, "log_every": 1,
            "progress": False, "tensorboard": False, "lr": 3e-3, "warmup_steps": 1}
    single = train(dict(base, output_dir=str(root / "single"), batch_size=8))
    return root, base, [h["loss"] for h in single.history]


def _launch(root: Path, cfg: dict, name: str, stage: str = "sft") -> list[float]:
    cfg = dict(cfg, output_dir=str(root / name))
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "flanmix", "train", stage, "--config", str(path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if "loss" in x]


def _final_weights_close(a: Path, b: Path, initial: str | Path) -> None:
    """Both runs moved every weight tensor the same way: their difference is under 1% of how far training moved it.

    (An absolute bound is not meaningful here: Adam divides by sqrt(v), so a gradient that is ~0 in one run and
    ~1e-9 in the other, from a different all-reduce summation order, still moves a weight by up to lr.)"""
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    w0 = load_file(str(Path(initial) / "model.safetensors"))
    for k in wa.keys() & wb.keys():  # (a DeepSpeed checkpoint also lists a tied lm_head)
        # a new head (the RM's score layer) has no initial weights here: compare with its own size
        moved = (wa[k] - w0[k]).abs().max() if k in w0 else wa[k].abs().max()
        assert (wa[k] - wb[k]).abs().max() <= 1e-2 * moved + 1e-7, k


def test_two_processes_equal_one(setup):
    root, base, single = setup
    losses = _launch(root, dict(base, batch_size=4), "ddp")
    assert len(losses) == STEPS  # one process logs, not two
    assert losses == pytest.approx(single, abs=1e-5)
    _final_weights_close(root / "single", root / "ddp", base["model"])


def test_deepspeed_zero2_equals_plain(setup):
    pytest.importorskip("deepspeed")
    root, base, single = setup
    ds = str(REPO / "configs" / "deepspeed" / "zero2.json")
    losses = _launch(root, dict(base, batch_size=4, deepspeed=ds), "zero2")
    assert losses == pytest.approx(single, abs=1e-5)
    assert (root / "zero2" / "checkpoints" / f"step-{STEPS}" / "pytorch_model").is_dir()  # a DeepSpeed checkpoint
    _final_weights_close(root / "single", root / "zero2", base["model"])


@pytest.mark.parametrize("stage", ["dpo", "rm"])
def test_preference_stages_on_two_processes_equal_one(setup, stage):
    """DPO and RM read hidden states and project only the positions they score (prefix-shared batches): on two
    processes they run through the DDP wrapper's forward (`trainers.adapters.as_forward`), so they train at all,
    and the gradients are averaged as one process with the same global batch computes them."""
    import importlib

    root, base, _ = setup
    rng = random.Random(1)
    pairs = root / f"pairs-{stage}.jsonl"
    with pairs.open("w") as f:
        for _ in range(48):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            f.write(json.dumps({"prompt": f"What is {a} + {b}?", "chosen": f" {a + b}",
                                "rejected": f" {a + b + rng.randint(1, 9)}"}) + "\n")
    cfg = {"model": base["model"], "data": str(pairs), "max_steps": STEPS, "log_every": 1, "progress": False,
           "tensorboard": False, "eval_fraction": 0.0, "lr": 1e-3, "warmup_steps": 1}
    single = importlib.import_module(f"trainers.{stage}").train(dict(cfg, output_dir=str(root / f"{stage}-1"),
                                                                      batch_size=8))
    losses = _launch(root, dict(cfg, batch_size=4), f"{stage}-2", stage=stage)
    assert losses == pytest.approx([h["loss"] for h in single.history if "loss" in h], abs=1e-5)
    _final_weights_close(root / f"{stage}-1", root / f"{stage}-2", base["model"])


def test_ppo_on_two_processes_runs_and_equals_one(setup):
    """PPO's actor-critic container trains through the DDP wrapper (`as_forward`). Its rollouts are not split across
    processes yet: each process samples the same rollouts from the same seed, so two processes give exactly the
    losses of one process with the same (per-process) settings."""
    from trainers.ppo import train as train_ppo

    root, base, _ = setup
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Review {i}:"}) + "\n" for i in range(16)))
    cfg = {"model": base["model"], "data": str(prompts), "reward_fn": "flanmix.builtin.steering:reward",
           "max_steps": 2, "batch_size": 4, "log_every": 1, "progress": False, "tensorboard": False}
    single = train_ppo(dict(cfg, output_dir=str(root / "ppo-1")))
    losses = _launch(root, cfg, "ppo-2", stage="ppo")
    assert losses == pytest.approx([h["loss"] for h in single.history if "loss" in h], abs=1e-5)
