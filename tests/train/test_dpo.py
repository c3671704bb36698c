"""DPO: loss equations, ln 2 at step 0, frozen-copy == precomputed reference, learning, TRL cross-check."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from flanmix.preferences import preference_rows, row_to_group
from helpers import reverse_examples, write_prefs
from trainers.dpo import DPOConfig, DPOStage, batch_dpo_loss, build_stage, train
from trainers.losses.dpo import dpo_loss
from trainers.models import load_tokenizer
from trainers.policy import load_policy, preference_accuracy
from trainers.preference import encode_groups


def _groups(tok, n=16, kind="pairs"):
    rows = preference_rows(reverse_examples(n), kind=kind, seed=0)
    return encode_groups(tok, [row_to_group(r) for r in rows], 64)


def _nudge(model, seed=1, scale=0.02):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_loss_equations():
    pc, pr = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -5.0])
    beta = 0.3
    h = (pc - rc) - (pr - rr)
    loss, m = dpo_loss(pc, pr, rc, rr, beta, "sigmoid")
    assert loss.item() == pytest.approx(float(-F.logsigmoid(beta * h).mean()))
    assert loss.item() == pytest.approx(sum(-math.log(1 / (1 + math.exp(-beta * x))) for x in h.tolist()) / 2)
    assert dpo_loss(pc, pr, rc, rr, beta, "ipo")[0].item() == pytest.approx(
        sum((x - 1 / (2 * beta)) ** 2 for x in h.tolist()) / 2)
    assert dpo_loss(pc, pr, rc, rr, beta, "hinge")[0].item() == pytest.approx(
        sum(max(0.0, 1 - beta * x) for x in h.tolist()) / 2)
    assert m["rewards/chosen"] == pytest.approx(float((beta * (pc - rc)).mean()))
    assert m["rewards/rejected"] == pytest.approx(float((beta * (pr - rr)).mean()))
    assert m["rewards/margins"] == pytest.approx(float((beta * h).mean()))
    assert m["rewards/accuracies"] == pytest.approx(float((h > 0).float().mean()))


def test_frozen_copy_and_precomputed_reference_give_identical_numbers(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    base = load_policy(tiny_model_dir)
    ga, gb = _groups(tok), _groups(tok, kind="rankings")
    a = DPOStage(copy.deepcopy(base), tok, ga, reference="copy", beta=0.1)
    b = DPOStage(copy.deepcopy(base), tok, gb, reference="precomputed", beta=0.1)
    batch_a, batch_b = a.collate(ga[:8]), b.collate(gb[:8])
    assert "ref_logps" in batch_b and "ref_logps" not in batch_a
    with torch.no_grad():
        la, _ = a.loss(a.model, a.collate(ga[:8]))
    assert la.item() == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 0
    # move both policies the same way; the reference must stay the initial model in both modes
    _nudge(a.model)
    _nudge(b.model)
    batch_a = a.collate(gb[:8])  # same rows for both
    with torch.no_grad():
        la, ma = a.loss(a.model, batch_a)
        lb, mb = b.loss(b.model, batch_b)
    assert la.item() != pytest.approx(math.log(2), abs=1e-4)
    assert lb.item() == pytest.approx(la.item(), abs=1e-5)
    for k in ma:
        assert mb[k] == pytest.approx(ma[k], abs=1e-5), k


@pytest.mark.parametrize("sharing, rows", [(False, 12), (True, 6)])
def test_one_concatenated_forward(tiny_model_dir, monkeypatch, sharing, rows):
    tok = load_tokenizer(tiny_model_dir)
    g = _groups(tok, 6)
    stage = DPOStage(load_policy(tiny_model_dir), tok, g, prefix_sharing=sharing)
    calls = []
    backbone = stage.model.base_model
    orig = backbone.forward
    monkeypatch.setattr(backbone, "forward", lambda *a, **k: calls.append(k["input_ids"].shape) or orig(*a, **k))
    stage.loss(stage.model, stage.collate(g))
    # chosen and rejected of 6 pairs in one forward: 12 rows, or 6 prompt-shared rows
    assert len(calls) == 1 and calls[0][0] == rows


def test_dpo_step0_ln2_and_learning(tmp_path, tiny_model_dir):
    data = write_prefs(tmp_path / "prefs.jsonl", n=300, edits="chars")
    cfg = DPOConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "dpo"), max_steps=40,
                    batch_size=16, lr=3e-3, beta=0.1, max_length=64, log_every=1, progress=False,
                    tensorboard=False, eval_fraction=0.2)
    stage = build_stage(cfg)
    before = preference_accuracy(stage.model, stage.eval_groups, stage.pad_id)
    result = train(cfg)
    steps = [r for r in result.history if "loss" in r]
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    after = [r for r in result.history if "eval_preference_accuracy" in r][-1]["eval_preference_accuracy"]
    print(f"DPO held-out preference accuracy {before:.3f} -> {after:.3f}")
    assert after >= 0.8 and after > before + 0.2
    assert steps[-1]["rewards/accuracies"] > 0.8


def test_dpo_matches_trl(tmp_path, tiny_model_dir):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tok = load_tokenizer(tiny_model_dir)
    rows = preference_rows(reverse_examples(8), kind="pairs", seed=0)
    model = load_policy(tiny_model_dir)
    ref = copy.deepcopy(model)  # explicit reference: TRL would otherwise reload its own copy from disk
    _nudge(model)
    for beta, loss_type in [(0.1, "sigmoid"), (0.5, "hinge")]:
        args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, max_length=64,
                             bf16=False, use_cpu=True, report_to=[], beta=beta, loss_type=[loss_type],
                             save_strategy="no", logging_strategy="no")
        trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, processing_class=tok,
                                 train_dataset=Dataset.from_list(rows))
        batch = {k: v.cpu() for k, v in next(iter(trainer.get_train_dataloader())).items()}
        model.eval()
        with torch.no_grad():
            trl_loss = trainer.compute_loss(model, dict(batch)).item()
        trl_m = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
        B = batch["input_ids"].shape[0] // 2
        ours = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "loss_mask": batch["completion_mask"], "pair_chosen": torch.arange(B),
                "pair_rejected": torch.arange(B, 2 * B)}
        with torch.no_grad():
            loss, m = batch_dpo_loss(model, ours, beta, loss_type, ref_model=ref)
        assert loss.item() == pytest.approx(trl_loss, abs=1e-5)
        for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            assert m[k] == pytest.approx(trl_m[k], abs=1e-5), k
