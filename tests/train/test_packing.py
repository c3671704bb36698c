"""Tokenization boundaries, loss masks and padding-free packing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flanmix.core.errors import FlanmixError
from trainers.data import IGNORE, check_prefix, tokenize_prompt_completion, tokenize_rows
from trainers.models import load_causal_lm, load_tokenizer
from trainers.packing import block_diagonal_mask, collate_packed, collate_padded, pack_greedy
from trainers.sft import token_loss


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def _rows(n=9):
    return [{"inputs": f"What is {i} + {i * 7}?", "targets": f" {i * 8}" * (1 + i % 3)} for i in range(n)]


def test_prompt_is_prefix_even_when_bpe_would_merge_across_boundary(tok):
    # "What is 1" + "2" would be one merged token "12" if tokenized jointly
    prompt, completion = "Question: What is 3 + 9?\nAnswer: 1", "2"
    joint = tok(prompt + completion, add_special_tokens=False)["input_ids"]
    alone = tok(prompt, add_special_tokens=False)["input_ids"]
    assert joint[: len(alone)] != alone, "test needs a merge across the boundary"
    ids, labels = tokenize_prompt_completion(tok, prompt, completion)
    check_prefix(tok, prompt, ids)
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == prompt + completion
    n_prompt = 1 + len(alone)
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id


def test_eos_in_labels_when_pad_equals_eos(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tok.pad_token = tok.eos_token
    ex, _ = tokenize_rows(tok, [{"prompt": "a b", "completion": " c"}], max_length=32)
    batch = collate_padded(ex + [{"input_ids": [1, 5, 6, 7, 8, 9], "labels": [IGNORE] * 5 + [9]}], tok.pad_token_id)
    # shifted labels: the target of the position before EOS is EOS, even though pad == eos
    row = batch["labels"][0]
    assert tok.eos_token_id in row.tolist()
    assert (batch["input_ids"][0] == tok.eos_token_id).sum() >= 2  # EOS + padding with the same id


def test_chat_rows_train_only_assistant_turns(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]
    ex, _ = tokenize_rows(tok, [{"messages": msgs}], max_length=64)
    ids, labels = ex[0]["input_ids"], ex[0]["labels"]
    full = tok.apply_chat_template(msgs, tokenize=True)["input_ids"]
    assert tok.decode(ids) == tok.decode(full)
    trained = tok.decode([t for t in labels if t != IGNORE])
    assert "hello" in trained and "ciao" in trained and "hi" not in trained and "bye" not in trained
    assert trained.count(tok.eos_token) == 2


def test_empty_loss_mask_is_an_error_naming_the_row(tok):
    with pytest.raises(FlanmixError, match="row 1: empty loss mask"):
        tokenize_rows(tok, [{"inputs": "a", "targets": "b"}, {"inputs": "a", "targets": ""}], max_length=32)


def test_truncate_and_drop_are_counted(tok):
    rows = [{"inputs": "short", "targets": "x"}, {"inputs": "word " * 5, "targets": "long " * 40}]
    ex, st = tokenize_rows(tok, rows, max_length=24, truncation="truncate")
    assert (st.kept, st.truncated, st.dropped) == (2, 1, 0) and len(ex[1]["input_ids"]) == 24
    ex, st = tokenize_rows(tok, rows, max_length=24, truncation="drop")
    assert (st.kept, st.truncated, st.dropped) == (1, 0, 1) and len(ex) == 1
    # a prompt that alone fills max_length leaves nothing to train: dropped and counted, not trained on
    ex, st = tokenize_rows(tok, rows + [{"inputs": "word " * 40, "targets": "x"}], max_length=24)
    assert (st.kept, st.truncated, st.dropped, st.prompt_too_long) == (2, 1, 1, 1)
    with pytest.raises(FlanmixError, match="dropped"):
        tokenize_rows(tok, [{"inputs": "word " * 40, "targets": "x"}], max_length=8)


def test_missing_columns(tok):
    with pytest.raises(FlanmixError, match="missing columns"):
        tokenize_rows(tok, [{"question": "a", "answer": "b"}], max_length=32)


def test_pack_greedy_fits_and_covers():
    lengths = [5, 9, 3, 7, 1, 10, 2, 8]
    rows = pack_greedy(lengths, 10)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == 5  # sum 45 -> at least 5 rows of 10
    with pytest.raises(ValueError, match="document 0 has 11 tokens > max_length 10"):
        pack_greedy([11], 10)


def test_collate_packed_positions_and_boundary_labels():
    docs = [{"input_ids": [1, 10, 11], "labels": [IGNORE, IGNORE, 11]},
            {"input_ids": [1, 20, 21, 22], "labels": [IGNORE, 20, 21, 22]}]
    b = collate_packed([docs, docs[:1]], pad_id=0)
    assert b["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 2, 3]
    # shifted: doc 1's last position must not predict doc 2's first token
    assert b["labels"][0].tolist() == [IGNORE, 11, IGNORE, 20, 21, 22, IGNORE]
    assert b["labels"][1].tolist() == [IGNORE, 11, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]
    m = block_diagonal_mask(b["position_ids"])
    allowed = (m[0, 0] == 0)
    assert allowed[4, 3] and not allowed[4, 2] and not allowed[1, 2]


def _loss(model, batch):
    keep = batch["labels"] != IGNORE
    out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"), use_cache=False)
    return F.cross_entropy(out.logits[keep].float(), batch["labels"][keep], reduction="sum") / keep.sum()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("mask", ["position_ids", "4d"])
def test_packed_loss_equals_unpacked(tiny_model_dir, tok, attn, mask):
    model = load_causal_lm(tiny_model_dir, attn_implementation=attn).eval()
    ex, _ = tokenize_rows(tok, _rows(11), max_length=64)
    rows = pack_greedy([len(e["input_ids"]) for e in ex], 40)
    assert len(rows) < len(ex)
    with torch.no_grad():
        unpacked = _loss(model, collate_padded(ex, tok.pad_token_id))
        packed = _loss(model, collate_packed([[ex[i] for i in r] for r in rows], tok.pad_token_id, mask=mask))
        # the same rows without restarting positions/masking leak across documents and change the loss
        leaky = collate_packed([[ex[i] for i in r] for r in rows], tok.pad_token_id)
        leaky["position_ids"] = torch.arange(leaky["input_ids"].shape[1]).expand_as(leaky["input_ids"])
        leaky_loss = _loss(model, leaky)
    assert abs(packed.item() - unpacked.item()) < 1e-5
    assert abs(leaky_loss.item() - unpacked.item()) > 1e-3


def test_selective_logits_loss_matches_full(tiny_model_dir, tok):
    model = load_causal_lm(tiny_model_dir).eval()
    ex, _ = tokenize_rows(tok, _rows(5), max_length=64)
    batch = collate_padded(ex, tok.pad_token_id)
    with torch.no_grad():
        a, n = token_loss(model, batch, select=True)
        b, m = token_loss(model, batch, select=False)
    assert int(n) == int(m) and abs(a.item() - b.item()) < 1e-5
