"""LoRA through every stage (PEFT): equivalence with PEFT's own forward/backward, the adapter-disabled base as the
reference, heads that train alongside the adapter, exact resume, adapter saving and merging, the `peft:` block on
the command line, one-line errors (unknown target modules, QLoRA without a GPU), and learning (SFT, DPO)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from flanmix.cli import main
from helpers import reverse_examples, write_prefs
from trainers import dpo, loop, ppo, rm, sft
from trainers.adapters import frozen_base, is_adapter_dir, load_merged
from trainers.dpo import attach_reference_logprobs
from trainers.logprobs import batch_sequence_logprobs
from trainers.policy import load_policy, preference_accuracy
from trainers.preference import collate
from trainers.rewards import scalar_head
from trainers.sft import SFTConfig, SFTStage

QUIET = {"progress": False, "tensorboard": False, "log_every": 1}
LORA = {"r": 4, "alpha": 8}


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "sft.jsonl"
    rows = [{"prompt": p, "completion": " " + c} for p, c in reverse_examples(160, seed=3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    return write_prefs(tmp_path_factory.mktemp("lora") / "prefs.jsonl", n=160, edits="chars")


def _lora_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _frozen(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


# ------------------------------------------------------------------------------------------------ equivalence


def test_lora_sft_reproduces_peft_forward_and_backward(tmp_path, tiny_model_dir, sft_data):
    cfg = SFTConfig(model=str(tiny_model_dir), data=str(sft_data), output_dir=str(tmp_path / "run"),
                    peft={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]})
    stage = SFTStage(cfg, verbose=False)
    ours = stage.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B starts at zero; give the adapter something to do
        for n, p in ours.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    reference = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                          task_type="CAUSAL_LM"))
    reference.load_state_dict(ours.state_dict())
    items = stage.items[:6]
    loss, _ = stage.loss(ours, stage.collate(items))
    width = max(len(e["input_ids"]) for e in items)
    ids = torch.tensor([e["input_ids"] + [stage.pad_id] * (width - len(e["input_ids"])) for e in items])
    mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"])) for e in items])
    labels = torch.tensor([e["labels"] + [-100] * (width - len(e["labels"])) for e in items])
    ref_loss = reference(input_ids=ids, attention_mask=mask, labels=labels).loss  # PEFT + transformers' loss
    assert abs(loss.item() - ref_loss.item()) < 1e-6
    loss.backward()
    ref_loss.backward()
    theirs = dict(reference.named_parameters())
    grads = [(n, p.grad, theirs[n].grad) for n, p in ours.named_parameters() if p.requires_grad]
    assert grads and all(a is not None for _, a, _ in grads)
    for n, a, b in grads:
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5, msg=n)


# --------------------------------------------------------------------------------------- reference and heads


def test_dpo_reference_is_the_adapter_disabled_base(tmp_path, tiny_model_dir, prefs):
    common = dict(model=str(tiny_model_dir), data=str(prefs), max_steps=3, batch_size=8, lr=2e-2, max_length=64,
                  eval_fraction=0, peft=LORA, **QUIET)
    stage = dpo.build_stage(dpo.DPOConfig(**common, output_dir=str(tmp_path / "d"), reference_mode="copy"))
    assert stage.ref_model is None and stage.adapter_reference  # no second copy in memory
    frozen_copy = load_policy(tiny_model_dir).eval()
    result = dpo.train(dpo.DPOConfig(**common, output_dir=str(tmp_path / "d"), reference_mode="copy"))
    assert result.steps == 3
    trained = dpo.build_stage(dpo.DPOConfig(**common, output_dir=str(tmp_path / "e"), reference_mode="copy"))
    trained.model = PeftModel.from_pretrained(load_policy(tiny_model_dir), result.final_dir)
    batch = collate(trained.train_groups[:8], trained.pad_id)
    with frozen_base(trained.model):
        ref = batch_sequence_logprobs(trained.model, batch)
    with torch.no_grad():
        policy = batch_sequence_logprobs(trained.model.eval(), batch)
        expected = batch_sequence_logprobs(frozen_copy, batch)
    assert torch.equal(ref, expected)                  # identical reference log-probs to a frozen copy
    assert not torch.allclose(policy, expected)        # while the adapter does change the policy
    # precomputed mode: computed once from the adapter-disabled base, the same numbers
    pre = dpo.build_stage(dpo.DPOConfig(**common, output_dir=str(tmp_path / "f")))
    groups = copy.deepcopy(pre.train_groups)
    attach_reference_logprobs(frozen_copy, groups, pre.pad_id)
    assert [g.ref_logps for g in pre.train_groups] == [g.ref_logps for g in groups]


@pytest.mark.filterwarnings("ignore:Could not find a config file")  # the critic adapter's base is the rm adapter
def test_rm_and_ppo_heads_train_alongside_the_adapter(tmp_path, tiny_model_dir, prefs):
    common = dict(model=str(tiny_model_dir), max_length=64, peft=LORA, **QUIET)
    stage = rm.build_stage(rm.RMConfig(**common, data=str(prefs), output_dir=str(tmp_path / "rm"), eval_fraction=0))
    head0, base0 = scalar_head(stage.model).weight.detach().clone(), _frozen(stage.model)
    lora0 = {n: p for n, p in _lora_params(stage.model).items() if "lora_" in n}
    res = rm.train(rm.RMConfig(**common, data=str(prefs), output_dir=str(tmp_path / "rm"), eval_fraction=0,
                               max_steps=4, batch_size=8, lr=1e-2))
    final = res.final_dir
    assert is_adapter_dir(final)
    merged = load_merged(final)  # base + adapter + the trained head
    assert type(merged).__name__.endswith("ForSequenceClassification")
    assert not torch.allclose(scalar_head(merged).weight, head0)
    assert all(torch.equal(p, base0[n]) for n, p in _frozen(stage.model).items())  # the stage's base: untouched
    trained = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1), final)
    assert any(not torch.equal(p, lora0[n]) for n, p in trained.named_parameters() if n in lora0)

    cfg = ppo.PPOConfig(**common, data=str(prefs), output_dir=str(tmp_path / "ppo"), reward_model=final,
                        rollout_batch_size=4, mini_batch_size=4, max_new_tokens=6, max_steps=2, lr=1e-2)
    stage = ppo.build_stage(cfg)
    assert stage.ref_model is None  # the actor's adapter-disabled base is the reference
    before = _lora_params(stage.model)
    assert any(n.startswith("critic.") and "modules_to_save" in n for n in before)  # the value head trains
    base_before = _frozen(stage.model)
    loop.train(stage, cfg)
    after = _lora_params(stage.model)
    for part in ("actor.", "critic."):
        assert any(not torch.equal(after[n], before[n]) for n in before if n.startswith(part)), part
    value_head = [n for n in before if n.startswith("critic.") and "modules_to_save" in n]
    assert any(not torch.equal(after[n], before[n]) for n in value_head)
    assert all(torch.equal(p, base_before[n]) for n, p in _frozen(stage.model).items())
    assert is_adapter_dir(tmp_path / "ppo" / "final") and is_adapter_dir(tmp_path / "ppo" / "final" / "critic")


# ------------------------------------------------------------------------------------------ resume, save, merge


def test_resume_restores_the_adapter_exactly(tmp_path, tiny_model_dir, sft_data):
    common = dict(model=str(tiny_model_dir), data=str(sft_data), batch_size=4, max_length=64, max_steps=6,
                  lr=1e-2, peft={**LORA, "dropout": 0.1}, **QUIET)
    full = sft.train(dict(common, output_dir=str(tmp_path / "full"), save_every=3))
    ckpt = tmp_path / "full" / "checkpoints" / "step-3"
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:  # adapter-sized: the frozen base is not saved
        assert f.keys() and all("lora_" in k for k in f.keys())
    shutil.copytree(ckpt, tmp_path / "again" / "checkpoints" / "step-3")
    again = sft.train(dict(common, output_dir=str(tmp_path / "again"), save_every=3))
    assert [h["loss"] for h in again.history if "loss" in h] == [h["loss"] for h in full.history if "loss" in h][3:]
    with safe_open(str(tmp_path / "full" / "final" / "adapter_model.safetensors"), "pt") as a, \
            safe_open(str(tmp_path / "again" / "final" / "adapter_model.safetensors"), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_cli_set_peft_then_merge_adapter_loads_in_plain_transformers(tmp_path, tiny_model_dir, sft_data, capsys):
    cfg = {"model": str(tiny_model_dir), "data": str(sft_data), "output_dir": str(tmp_path / "run"), "max_steps": 2,
           "batch_size": 4, "max_length": 64, "lr": 1e-2, **QUIET}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "sft", "--config", str(tmp_path / "sft.yaml"), "--set", "peft={r: 8, alpha: 16}"]) == 0
    final = tmp_path / "run" / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())  # PEFT's format
    assert (adapter["r"], adapter["lora_alpha"]) == (8, 16)
    assert adapter["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    assert main(["merge-adapter", str(final), "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")  # plain transformers, no peft
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), final).eval()
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-5, rtol=1e-5)
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    # `flanmix eval` takes the adapter folder as it is: the same scores as its merged checkpoint
    from flanmix.study.eval import EvalOptions, evaluate

    options = EvalOptions(limit=4, threads=1)
    on_adapter = evaluate(final, ["arith_add"], options)
    on_merged = evaluate(tmp_path / "merged", ["arith_add"], options)
    assert on_adapter["tasks"] == on_merged["tasks"]


@pytest.mark.parametrize("setting, message", [
    ("peft={target_modules: [q_prj]}", "peft.target_modules: LoRA target module(s) q_prj not found"),
    pytest.param("peft={qlora: true}", "peft.qlora: QLoRA needs a CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without")),
])
def test_bad_peft_settings_are_one_line_errors(tmp_path, tiny_model_dir, sft_data, capsys, setting, message):
    cfg = {"model": str(tiny_model_dir), "data": str(sft_data), "output_dir": str(tmp_path / "run"), "max_steps": 1}
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "sft", "--config", str(tmp_path / "sft.yaml"), "--set", setting]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


# ------------------------------------------------------------------------------------------------ it learns


def test_lora_sft_and_lora_dpo_learn(tmp_path, tiny_model_dir, sft_data, prefs):
    # A random tiny base with frozen (tied) embeddings caps how far a LoRA adapter can take the SFT loss (the
    # logits cannot grow); the check is that both runs move their metric the right way, clearly.
    res = sft.train(dict(model=str(tiny_model_dir), data=str(sft_data), eval_data=str(sft_data),
                         output_dir=str(tmp_path / "sft"), batch_size=16, max_length=64, max_steps=15, lr=3e-2,
                         eval_every=15, peft={"r": 8, "alpha": 16}, max_rows=128, save_final=False, **QUIET))
    losses = [h["loss"] for h in res.history if "loss" in h]
    eval_loss = [h["eval_loss"] for h in res.history if "eval_loss" in h][-1]
    print(f"LoRA SFT loss {losses[0]:.3f} -> {losses[-1]:.3f} (eval {eval_loss:.3f})")
    assert losses[-1] < losses[0] - 0.2 and eval_loss < losses[0] - 0.2

    cfg = dpo.DPOConfig(model=str(tiny_model_dir), data=str(prefs), output_dir=str(tmp_path / "dpo"), max_steps=12,
                        batch_size=16, lr=2e-2, beta=0.1, max_length=64, eval_fraction=0.25, peft={"r": 8, "alpha": 16},
                        save_final=False, **QUIET)
    stage = dpo.build_stage(cfg)
    before = preference_accuracy(stage.model, stage.eval_groups, stage.pad_id)
    result = dpo.train(cfg)
    steps = [r for r in result.history if "loss" in r]
    after = [r for r in result.history if "eval_preference_accuracy" in r][-1]["eval_preference_accuracy"]
    print(f"LoRA DPO held-out preference accuracy {before:.3f} -> {after:.3f}")
    assert steps[0]["loss"] == pytest.approx(0.6931, abs=1e-4)  # adapter starts at zero: policy == reference
    assert steps[-1]["loss"] < steps[0]["loss"] and after > before + 0.2


def test_qlora_gpu_bench_refuses_in_one_line_without_a_gpu(repo_root):
    # bench/bench_qlora_gpu.py is run on a lent GPU; everywhere else it must say why it cannot, in one line
    import os
    import subprocess
    import sys

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(repo_root / "bench" / "bench_qlora_gpu.py"), "--sft-steps", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr
    assert err[0].startswith("bench_qlora_gpu: needs a CUDA GPU"), err
    assert not proc.stdout.strip()
