"""Sequence log-probs without [N, T, V] logits: the output head only at completion positions, chunked under
checkpointing above `LOGITS_BUDGET`. Checked against the models' own forward (full logits, log-softmax, gather,
re-derived here), on loss and gradients, for padded and prefix-shared batches, plain and LoRA, and for the
architectures that post-process their logits (soft-capping, logit scales)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from flanmix.preferences import preference_rows, row_to_group
from helpers import reverse_examples
from trainers import logprobs
from trainers.adapters import wrap
from trainers.config import PeftSettings
from trainers.dpo import DPOStage, batch_dpo_loss
from trainers.logprobs import batch_sequence_logprobs, output_logits
from trainers.models import load_tokenizer
from trainers.policy import load_policy
from trainers.preference import collate, collate_shared, encode_groups

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def reference_sequence_logprobs(model, batch: dict) -> torch.Tensor:
    """The textbook computation on a padded batch: the model's full logits, log-softmax, the next token's entry,
    summed over the completion (loss_mask) positions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * batch["loss_mask"][:, 1:].float()).sum(-1)


def _groups(tok, n=8):
    rows = preference_rows(reverse_examples(n), kind="pairs", seed=0)
    return encode_groups(tok, [row_to_group(r) for r in rows], 64)


def _nudged(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("cls, cfg", [
    (LlamaForCausalLM, LlamaConfig(**SMALL)),
    (Gemma2ForCausalLM, Gemma2Config(**SMALL, final_logit_softcapping=0.05)),  # small cap: tanh is far from linear
    (CohereForCausalLM, CohereConfig(**SMALL, logit_scale=3.0)),
    (GraniteForCausalLM, GraniteConfig(**SMALL, logits_scaling=5.0)),
])
def test_output_logits_are_the_models_own(cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg).eval()
    ids = torch.randint(3, 97, (2, 9))
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
        hidden = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        ours = output_logits(model, hidden)
        plain = model.get_output_embeddings()(hidden)
    torch.testing.assert_close(ours, full, rtol=0, atol=1e-6)
    if cls is not LlamaForCausalLM:  # the post-processing matters at these settings
        assert (plain - full).abs().max() > 1e-2


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("sharing", [False, True])
@pytest.mark.parametrize("rows", [None, 3])  # unchunked, and 3 rows of logits per chunk
def test_loss_and_gradients_equal_the_full_logits_path(tiny_model_dir, monkeypatch, lora, sharing, rows):
    tok = load_tokenizer(tiny_model_dir)
    policy = _nudged(load_policy(tiny_model_dir))
    if lora:
        policy = wrap(policy, PeftSettings(r=4, alpha=8), base_path=tiny_model_dir)
        with torch.no_grad():  # non-zero B matrices, so the adapter changes the outputs and gets gradients
            for n, p in policy.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    ref = load_policy(tiny_model_dir)
    groups = _groups(tok)
    padded = collate(groups, tok.pad_token_id)
    batch = collate_shared(groups, tok.pad_token_id) if sharing else padded
    vocab = policy.get_output_embeddings().weight.shape[0]
    if rows is not None:
        monkeypatch.setattr(logprobs, "LOGITS_BUDGET", rows * vocab)
    calls = []
    real = logprobs.checkpoint
    monkeypatch.setattr(logprobs, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))

    loss, _ = batch_dpo_loss(policy, batch, 0.1, ref_model=ref)
    loss.backward()
    ours_grads = _grads(policy)
    n_tok = int(padded["loss_mask"][:, 1:].sum())
    assert len(calls) == (0 if rows is None else math.ceil(n_tok / rows))

    with torch.no_grad():
        ref_lp = reference_sequence_logprobs(ref, padded)
    lp = reference_sequence_logprobs(policy, padded)
    c, r = padded["pair_chosen"], padded["pair_rejected"]
    h = (lp[c] - ref_lp[c]) - (lp[r] - ref_lp[r])
    expected = -F.logsigmoid(0.1 * h).mean()
    expected.backward()
    want_grads = _grads(policy)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert ours_grads.keys() == want_grads.keys() and ours_grads
    for name, g in want_grads.items():
        torch.testing.assert_close(ours_grads[name], g, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(batch_sequence_logprobs(policy, batch), lp.detach(), rtol=1e-6, atol=1e-5)


def test_chunks_keep_no_full_logits_for_the_backward(tiny_model_dir, monkeypatch):
    tok = load_tokenizer(tiny_model_dir)
    model = load_policy(tiny_model_dir)
    batch = collate(_groups(tok), tok.pad_token_id)
    vocab = model.get_output_embeddings().weight.shape[0]
    n_tok = int(batch["loss_mask"][:, 1:].sum())

    def largest_saved_vocab_tensor() -> int:
        sizes = []

        def pack(t):
            if t.dim() and t.shape[-1] == vocab and t.dtype.is_floating_point and t.shape[0] != vocab:
                sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            batch_sequence_logprobs(model, batch).sum().backward()
        model.zero_grad(set_to_none=True)
        return max(sizes, default=0)

    assert largest_saved_vocab_tensor() >= n_tok * vocab  # one pass: the [M, V] logits wait for the backward
    monkeypatch.setattr(logprobs, "LOGITS_BUDGET", 4 * vocab)
    assert largest_saved_vocab_tensor() == 0  # chunked: recomputed in the backward, never kept


def test_dpo_at_init_is_ln2_with_chunked_logprobs(tiny_model_dir, monkeypatch):
    tok = load_tokenizer(tiny_model_dir)
    monkeypatch.setattr(logprobs, "LOGITS_BUDGET", 5 * len(tok))
    groups = _groups(tok)
    for reference in ("precomputed", "copy"):
        stage = DPOStage(load_policy(tiny_model_dir), tok, groups, reference=reference)
        loss, metrics = stage.loss(stage.model, stage.collate(groups))
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
        assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_lora_dpo_grads_only_on_the_adapter_and_checkpointing_changes_nothing(tiny_model_dir):
    from trainers.runtime import enable_gradient_checkpointing

    tok = load_tokenizer(tiny_model_dir)
    groups = _groups(tok)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # PEFT draws the A matrices from the global generator
        policy = wrap(load_policy(tiny_model_dir), PeftSettings(r=4, alpha=8, dropout=0.0), base_path=tiny_model_dir)
        with torch.no_grad():
            for n, p in policy.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
        if checkpointing:
            enable_gradient_checkpointing(policy)
        policy.train()
        stage = DPOStage(policy, tok, groups)
        loss, _ = stage.loss(policy, stage.collate(groups))
        loss.backward()
        # the frozen base gets no gradient buffers at all; every adapter matrix gets one
        assert all(p.grad is None for p in policy.parameters() if not p.requires_grad)
        assert all(p.grad is not None for p in policy.parameters() if p.requires_grad)
        grads.append(_grads(policy))
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_ppo_action_logprobs_use_the_models_own_logits():
    """PPO scores its sampled actions with the same logits generation sampled them from: Gemma 2's soft-capping
    included (the head alone would give different log-probs)."""
    from trainers.ppo import action_logprobs

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(**SMALL, final_logit_softcapping=0.05)).eval()
    ids = torch.randint(3, 97, (2, 9))
    attn = torch.ones_like(ids)
    mask = torch.zeros(2, 8)
    mask[:, 4:] = 1
    with torch.no_grad():
        ours = action_logprobs(model, ids, attn, mask)
        full = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), -1)
        expected = full.gather(-1, ids[:, 1:, None]).squeeze(-1) * mask
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
