"""Preference batches: tokenization of `Group`s (prompt prefix, EOS, truncation, chat template) and collation
(padded and prefix-shared), which must give the same numbers."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from flanmix.preferences import preference_rows, row_to_group
from trainers.logprobs import batch_sequence_logprobs
from trainers.models import load_tokenizer
from trainers.policy import load_policy
from trainers.preference import collate, collate_shared, encode_groups
from trainers.rewards import batch_reward_scores, new_reward_model


def test_tokenization_masks_and_collation(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    groups = [row_to_group({"prompt": "Reverse the words: red cat\n", "chosen": "cat red", "rejected": "red"}),
              row_to_group({"prompt": "Q: 2 + 2?", "responses": [" 4", " 5", " 44"], "scores": [0, -1, -40]})]
    enc = encode_groups(tok, groups, 64)
    for g, e in zip(groups, enc):
        p_ids = tok(g.prompt)["input_ids"]
        assert e.prompt_ids == p_ids  # the prompt tokens are a prefix of every sequence
        for r, ids in zip(g.responses, e.responses_ids):
            assert ids[-1] == tok.eos_token_id
            assert (tok.decode(ids[:-1]) == r
                    or tok.decode(p_ids + ids[:-1]) == tok.decode(tok(g.prompt + r)["input_ids"]))
    b = collate(enc, tok.pad_token_id)
    # response-major order: [g0 r0, g1 r0, g0 r1, g1 r1, g1 r2]
    assert b["group"].tolist() == [0, 1, 0, 1, 1]
    assert b["pair_chosen"].tolist() == [0, 1, 1, 3] and b["pair_rejected"].tolist() == [2, 3, 4, 4]
    for n in range(5):
        gi, r = [(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)][n]
        P, R = len(enc[gi].prompt_ids), len(enc[gi].responses_ids[r])
        assert b["loss_mask"][n].tolist() == [0] * P + [1] * R + [0] * (b["input_ids"].shape[1] - P - R)
        assert b["attention_mask"][n].sum() == P + R
    # pad == eos: the EOS of the completion is still in the loss mask (masks come from lengths, not ids)
    b2 = collate(enc, tok.eos_token_id)
    assert (b2["loss_mask"] == b["loss_mask"]).all()


def test_truncation_keeps_completions_and_shared_prompt(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    g = row_to_group({"prompt": "alpha beta " * 40, "chosen": "gamma delta", "rejected": "red"})
    e = encode_groups(tok, [g], 24)[0]
    assert all(len(e.prompt_ids) + len(r) <= 24 for r in e.responses_ids)
    assert e.responses_ids[0][-1] == tok.eos_token_id


def test_chat_rows_use_the_chat_template(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    g = row_to_group({"prompt": [{"role": "user", "content": "hi"}],
                      "chosen": [{"role": "assistant", "content": "hello there"}],
                      "rejected": [{"role": "assistant", "content": "go"}]})
    e = encode_groups(tok, [g], 64)[0]
    text = tok.decode(e.prompt_ids + e.responses_ids[0])
    assert "<|user|>" in text and "<|assistant|>" in text and text.rstrip().endswith(tok.eos_token)
    assert tok.decode(e.responses_ids[0], skip_special_tokens=True).strip() == "hello there"


def test_prefix_shared_batches_give_the_same_numbers(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = preference_rows([(f"Reverse the word '{w}'. ", w[::-1]) for w in ["horse", "apple", "table"]],
                           kind="rankings", k=3) + \
        preference_rows([("Copy: red cat dog\n", "red cat dog"), ("Q: 12 + 30?", " 42")], kind="pairs")
    enc = encode_groups(tok, [row_to_group(r) for r in rows], 64)
    padded, shared = collate(enc, tok.pad_token_id), collate_shared(enc, tok.pad_token_id)
    for k in ("group", "scores", "pair_chosen", "pair_rejected", "pair_group", "pair_margin"):
        assert torch.equal(padded[k], shared[k]), k
    assert shared["input_ids"].shape[0] == len(enc) and shared["num_tokens"] < int(padded["attention_mask"].sum())
    policy, rm = load_policy(tiny_model_dir), new_reward_model(tiny_model_dir)
    with torch.no_grad():
        for avg in (False, True):
            assert torch.allclose(batch_sequence_logprobs(policy, padded, avg),
                                  batch_sequence_logprobs(policy, shared, avg), atol=1e-5)
        assert torch.allclose(batch_reward_scores(rm, padded), batch_reward_scores(rm, shared), atol=1e-5)
        eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
        assert torch.allclose(batch_sequence_logprobs(policy, padded), batch_sequence_logprobs(eager, shared),
                              atol=1e-5)
