"""Reward model: score position, pairwise/ranking loss, training on verifiable preferences, TRL cross-check."""

from __future__ import annotations

import math

import pytest
import torch

from flanmix.core.errors import FlanmixError
from flanmix.preferences import load_preferences, preference_rows, row_to_group, split_groups
from helpers import reverse_examples, write_prefs
from trainers.losses.reward import pairwise_loss
from trainers.models import load_tokenizer
from trainers.ppo import PPOConfig
from trainers.ppo import build_stage as build_ppo_stage
from trainers.preference import EncodedGroup, collate, encode_groups
from trainers.rewards import last_token_index, load_reward_model, new_reward_model, reward_scores
from trainers.rm import RMConfig, build_stage, evaluate_rm, train


def test_last_token_index_left_right_and_pad_equals_eos(tiny_model_dir):
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4]
    tok = load_tokenizer(tiny_model_dir)
    model = new_reward_model(tiny_model_dir).eval()
    g = row_to_group({"prompt": "Reverse the words: red cat\n", "chosen": "cat red", "rejected": "red cat red dog"})
    enc = encode_groups(tok, [g], 64)
    for pad in (tok.pad_token_id, tok.eos_token_id):  # pad == eos must not move the score position
        b = collate(enc, pad)
        r = reward_scores(model, b["input_ids"], b["attention_mask"])
        for n, ids in enumerate([enc[0].prompt_ids + x for x in enc[0].responses_ids]):
            alone = reward_scores(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
            assert torch.allclose(r[n], alone[0], atol=1e-5)  # read at the EOS, the last real token
            # and it is the head applied to the hidden state of that token
            h = model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            assert torch.allclose(model.score(h).squeeze(), alone[0], atol=1e-5)


def test_ranking_loss_is_all_pairs_averaged_per_prompt():
    groups = [row_to_group({"prompt": "p", "responses": ["a", "b", "c"], "scores": [2, 0, 1]}),
              row_to_group({"prompt": "q", "chosen": "x", "rejected": "y", "margin": 0.3})]
    enc = [EncodedGroup([1], [[5, 2], [6, 2], [7, 2]], g.scores, g.margin) if i == 0 else
           EncodedGroup([1], [[5, 2], [6, 2]], g.scores, g.margin) for i, g in enumerate(groups)]
    b = collate(enc, 0)
    rewards = torch.randn(len(b["group"]))
    loss, m = pairwise_loss(rewards, b)
    # brute force: sequences are response-major: [g0a, g1x, g0b, g1y, g0c]
    r = {("p", "a"): rewards[0], ("q", "x"): rewards[1], ("p", "b"): rewards[2], ("q", "y"): rewards[3],
         ("p", "c"): rewards[4]}
    lp = [-math.log(torch.sigmoid(r["p", better] - r["p", worse]).item())
          for better, worse in [("a", "b"), ("a", "c"), ("c", "b")]]
    lq = -math.log(torch.sigmoid(r["q", "x"] - r["q", "y"] - 0.3).item())
    assert loss.item() == pytest.approx((sum(lp) / 3 + lq) / 2, abs=1e-6)
    diffs = [r["p", "a"] - r["p", "b"], r["p", "a"] - r["p", "c"], r["p", "c"] - r["p", "b"], r["q", "x"] - r["q", "y"]]
    assert m["accuracy"] == pytest.approx(sum(float(d > 0) for d in diffs) / 4)
    assert m["margin"] == pytest.approx(float(sum(diffs) / 4), abs=1e-6)


def test_rm_learns_verifiable_preferences(tmp_path, tiny_model_dir):
    # typo-level corruptions: checkable by a 2-layer model (word swaps in a reversal plateau near 0.9 here)
    data = write_prefs(tmp_path / "prefs.jsonl", n=300, edits="chars")
    cfg = RMConfig(model=str(tiny_model_dir), data=str(data), output_dir=str(tmp_path / "rm"), max_steps=40,
                   batch_size=16, lr=3e-3, max_length=64, log_every=5, progress=False, tensorboard=False,
                   eval_fraction=0.2, schedule="constant")
    stage = build_stage(cfg)
    before = evaluate_rm(stage.model, stage.eval_groups, stage.pad_id)
    result = train(cfg)
    evals = [r for r in result.history if "eval_accuracy" in r]
    after = evals[-1]["eval_accuracy"]
    print(f"RM held-out accuracy {before['accuracy']:.3f} -> {after:.3f}")
    assert before["accuracy"] <= 0.7 and before["pairs"] == 60  # a random head: chance or worse
    assert after >= 0.9 and evals[-1]["eval_margin"] > 0
    model = load_reward_model(tmp_path / "rm" / "final")
    tok = load_tokenizer(tmp_path / "rm" / "final")
    held_out = split_groups(load_preferences(data), 0.2, 0)[1]  # the stage's split, re-made (it is seeded)
    assert evaluate_rm(model, encode_groups(tok, held_out, 64), tok.pad_token_id)["accuracy"] == pytest.approx(after)


def test_reward_model_folder_without_scalar_head_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(FlanmixError, match="no scalar head"):
        load_reward_model(tiny_model_dir)
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_model_dir), data=str(tmp_path / "x.jsonl"),
                    output_dir=str(tmp_path / "ppo"), max_steps=1)
    with pytest.raises(FlanmixError, match="no scalar head"):
        build_ppo_stage(cfg)
    assert not (tmp_path / "ppo").exists()


def test_rm_matches_trl_reward_trainer(tmp_path, tiny_model_dir):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tok = load_tokenizer(tiny_model_dir)
    rows = preference_rows(reverse_examples(8), kind="pairs", seed=0)
    for r in rows[::2]:
        r["margin"] = 0.25
    for r in rows[1::2]:
        r["margin"] = 0.0
    model = new_reward_model(tiny_model_dir)
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=8, max_length=64,
                            bf16=False, use_cpu=True, report_to=[],
                            save_strategy="no", logging_strategy="no")
    trainer = trl.RewardTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows))
    batch = next(iter(trainer.get_train_dataloader()))
    batch = {k: v.cpu() for k, v in batch.items()}
    model.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(model, dict(batch)).item()
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}  # model.eval() -> "eval" bucket
    # ours on exactly the same token ids: pairs (i, B + i)
    B = batch["input_ids"].shape[0] // 2
    ours_batch = {"pair_chosen": torch.arange(B), "pair_rejected": torch.arange(B, 2 * B),
                  "pair_group": torch.arange(B), "pair_margin": batch["margin"].float()}
    with torch.no_grad():
        rewards = reward_scores(model, batch["input_ids"], batch["attention_mask"])
        loss, metrics = pairwise_loss(rewards, ours_batch)
        trl_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    assert torch.allclose(rewards, trl_logits, atol=1e-5)  # same score position (pad != eos here)
    assert loss.item() == pytest.approx(trl_loss, abs=1e-5)
    assert metrics["accuracy"] == pytest.approx(trl_metrics["accuracy"], abs=1e-5)
    assert metrics["margin"] == pytest.approx(trl_metrics["margin"], abs=1e-5)
