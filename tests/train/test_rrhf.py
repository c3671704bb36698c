"""RRHF: brute-force check of the loss equation (any batch size, k-way, ties), and learning on rankings."""

from __future__ import annotations

import pytest
import torch

from helpers import write_prefs
from trainers.losses.rrhf import rrhf_loss_from_scores
from trainers.models import load_tokenizer
from trainers.policy import load_policy, preference_accuracy
from trainers.preference import EncodedGroup, collate
from trainers.rrhf import RRHFConfig, build_stage, rrhf_loss, train


def brute_force_rrhf(model, groups, sft_weight):
    """The paper's equations, one prompt at a time, one response at a time."""
    per_prompt = []
    for g in groups:
        p = []
        for resp in g.responses_ids:
            ids = torch.tensor([g.prompt_ids + resp])
            logits = model(input_ids=ids).logits[0]
            lp = torch.log_softmax(logits, -1)
            toks = [lp[len(g.prompt_ids) - 1 + t, resp[t]] for t in range(len(resp))]
            p.append(sum(toks) / len(resp))  # length-normalised log-prob
        rank = sum((max(0.0, p[i] - p[j]) for i in range(len(p)) for j in range(len(p))
                    if g.scores[i] < g.scores[j]), torch.tensor(0.0))
        best = max(range(len(p)), key=lambda i: (g.scores[i], -i))
        per_prompt.append(rank + sft_weight * (-p[best]))
    return sum(per_prompt) / len(per_prompt)


def test_rrhf_matches_the_equation_for_any_batch(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    model = load_policy(tiny_model_dir).eval()
    torch.manual_seed(0)
    groups = [
        EncodedGroup([1, 40, 41], [[50, 51, 2], [52, 2], [53, 54, 55, 2]], [1.0, 3.0, 2.0]),
        EncodedGroup([1, 42], [[60, 2], [61, 62, 2]], [0.0, 1.0]),
        EncodedGroup([1, 43, 44, 45], [[70, 2], [71, 2], [72, 73, 2], [74, 2]], [2.0, 2.0, 0.0, 5.0]),  # a tie
    ]
    with torch.no_grad():
        for sft_weight in (1.0, 0.5):
            expected = brute_force_rrhf(model, groups, sft_weight)
            got, m = rrhf_loss(model, collate(groups, tok.pad_token_id), sft_weight)
            assert got.item() == pytest.approx(float(expected), abs=1e-5)
        # one prompt per batch gives the same per-prompt terms (batch size does not change the loss)
        singles = [rrhf_loss(model, collate([g], tok.pad_token_id))[0].item() for g in groups]
        assert sum(singles) / 3 == pytest.approx(rrhf_loss(model, collate(groups, tok.pad_token_id))[0].item(),
                                                 abs=1e-5)


def test_rank_term_is_hinge_over_ordered_pairs_and_ties_give_nothing():
    # p: two prompts; prompt 0 has responses with p = [-1, -2, -0.5] and scores [1, 1, 0] (a tie between 0 and 1)
    groups = [EncodedGroup([1], [[5], [6], [7]], [1.0, 1.0, 0.0]), EncodedGroup([1], [[5], [6]], [0.0, 1.0])]
    b = collate(groups, 0)
    order = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    pv = {(0, 0): -1.0, (0, 1): -2.0, (0, 2): -0.5, (1, 0): -0.3, (1, 1): -0.9}
    p = torch.tensor([pv[o] for o in order])
    loss, m = rrhf_loss_from_scores(p, b, sft_weight=0.0)
    # prompt 0: worse = response 2 (p -0.5) vs better 0 (-1) and 1 (-2): 0.5 + 1.5; tie (0, 1): nothing
    # prompt 1: worse = 0 (-0.3) vs better 1 (-0.9): 0.6
    assert loss.item() == pytest.approx((2.0 + 0.6) / 2)
    assert m["rank_loss"] == pytest.approx(1.3)
    loss_ft, _ = rrhf_loss_from_scores(p, b, sft_weight=1.0)
    assert loss_ft.item() == pytest.approx((2.0 + 1.0 + 0.6 + 0.9) / 2)  # best of prompt 0 is its first top score


def test_rrhf_learns_rankings(tmp_path, tiny_model_dir):
    data = write_prefs(tmp_path / "rank.jsonl", n=240, kind="rankings", k=3, edits="chars")
    cfg = RRHFConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "rrhf"), max_steps=30,
                     batch_size=8, lr=3e-3, max_length=64, log_every=5, progress=False, tensorboard=False,
                     eval_fraction=0.2)
    stage = build_stage(cfg)
    before = preference_accuracy(stage.model, stage.eval_groups, stage.pad_id)
    result = train(cfg)
    after = [r for r in result.history if "eval_preference_accuracy" in r][-1]["eval_preference_accuracy"]
    print(f"RRHF held-out preference accuracy {before:.3f} -> {after:.3f}")
    assert after >= 0.8 and after > before + 0.2
    losses = [r["loss"] for r in result.history if "loss" in r]
    assert losses[-1] < losses[0]
