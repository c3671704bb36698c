"""Encoder-decoder models (T5, Flan-T5, ...): tokenization, collation, the SFT loss, sequence log-probs of the
decoder, greedy decoding and option scoring.

The rule, as in the Flan-T5 papers: the prompt (`inputs`, `prompt`) goes to the encoder, tokenized as the
tokenizer does by itself (T5 appends </s>); the target (`targets`, `completion`) goes to the decoder, tokenized on
its own with EOS appended as an id. No `TARGET_DELIMITER` is put in front of a target (the decoder starts a new
sequence; the delimiter is a decoder-only device), and a target's leading whitespace is dropped, so an eval option
passed as `" " + option` scores exactly the ids SFT trained. The decoder reads `[decoder_start] + target[:-1]` and
predicts `target` (transformers' `_shift_right`), so `labels[:, t]` is the target of decoder position t, the same
"already shifted" convention as `trainers.packing`.

Preference batches (DPO, RRHF) keep the decoder-only layout of `trainers.preference.collate`, one row per sequence
``prompt ids + completion ids`` with a `loss_mask` on the completion; `split_prompt_completion` cuts each row back
into encoder input and decoder labels, so every stage's collation and bookkeeping stay the same.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from flanmix.core.errors import FlanmixError
from trainers.data import IGNORE, TokenStats, Truncation, detect_format
from trainers.losses.sft import completion_nll

# ---------------------------------------------------------------------------------------------------- tokenization


def encoder_ids(tokenizer, text: str) -> list[int]:
    """The encoder's ids of a prompt: the tokenizer's own encoding with its special tokens (T5: text + </s>)."""
    return list(tokenizer(text)["input_ids"])


def target_ids(tokenizer, text: str) -> list[int]:
    """The decoder's ids of a target: its tokens (leading whitespace dropped), then EOS."""
    ids = tokenizer(text.lstrip(), add_special_tokens=False)["input_ids"] if text.strip() else []
    return list(ids) + [tokenizer.eos_token_id]


def _field(row: dict, key: str) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise FlanmixError(f"must be a string, got {type(v).__name__}", field=key)
    return v


def row_ids(tokenizer, row: dict, fmt: str) -> tuple[list[int], list[int]]:
    """(encoder ids, decoder target ids + EOS) of one row."""
    if fmt == "messages":
        raise FlanmixError("chat rows ('messages') need a decoder-only model; an encoder-decoder trains on "
                           "inputs/targets or prompt/completion rows", field="messages")
    pk, ck = ("inputs", "targets") if fmt == "inputs_targets" else ("prompt", "completion")
    target = _field(row, ck)
    if not target.strip():
        raise FlanmixError("empty loss mask (empty completion)", field=ck)
    return encoder_ids(tokenizer, _field(row, pk)), target_ids(tokenizer, target)


def truncate_encoder(ids: list[int], max_length: int, eos: int | None) -> list[int]:
    """At most `max_length` ids, keeping a final EOS (as the tokenizer's own truncation does)."""
    if len(ids) <= max_length:
        return ids
    if eos is not None and ids and ids[-1] == eos:
        return ids[: max_length - 1] + [eos]
    return ids[:max_length]


def tokenize_rows(tokenizer, rows: Sequence[dict], *, max_length: int, truncation: Truncation = "truncate",
                  source: str | Path | None = None) -> tuple[list[dict], TokenStats]:
    """Every row as {"input_ids": encoder ids, "labels": decoder target ids}. `max_length` bounds each side:
    `truncate` cuts the prompt (keeping its EOS) and the target, `drop` skips the row; both are counted."""
    if truncation not in ("truncate", "drop"):
        raise FlanmixError(f"unknown truncation {truncation!r}", field="truncation", expected="truncate | drop")
    if not rows:
        raise FlanmixError("dataset is empty", file=source)
    fmt = detect_format(rows[0].keys(), source=source)
    eos = tokenizer.eos_token_id
    stats = TokenStats()
    out: list[dict] = []
    for i, row in enumerate(rows):
        stats.rows += 1
        try:
            enc, dec = row_ids(tokenizer, row, fmt)
        except FlanmixError as err:
            raise FlanmixError(f"row {i}: {err.message}", file=source, field=err.field, expected=err.expected) from err
        stats.max_len_seen = max(stats.max_len_seen, len(enc), len(dec))
        if len(enc) > max_length or len(dec) > max_length:
            if truncation == "drop":
                stats.dropped += 1
                continue
            stats.truncated += 1
            enc, dec = truncate_encoder(enc, max_length, eos), dec[:max_length]
        stats.kept += 1
        stats.tokens += len(enc) + len(dec)
        stats.trained_tokens += len(dec)
        out.append({"input_ids": enc, "labels": dec})
    if not out:
        raise FlanmixError(f"all {stats.rows} rows were dropped as longer than max_length={max_length}",
                           file=source, field="max_length")
    return out, stats


# ------------------------------------------------------------------------------------------------------- batches


def decoder_start_id(model) -> int:
    """The id the decoder starts from (T5: the pad id)."""
    cfg = model.config
    start = getattr(cfg, "decoder_start_token_id", None)
    if start is None:
        start = getattr(cfg, "pad_token_id", None)
    if start is None:
        raise FlanmixError("the model config has no decoder_start_token_id", field="decoder_start_token_id")
    return int(start)


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Decoder inputs from labels [N, T]: the start id, then labels[:, :-1], with IGNORE replaced by pad."""
    out = torch.full_like(labels, pad_id)
    out[:, 0] = start_id
    out[:, 1:] = labels[:, :-1]
    return out.masked_fill(out == IGNORE, pad_id)


def collate(examples: Sequence[dict], pad_id: int, start_id: int) -> dict[str, torch.Tensor]:
    """Right-padded encoder inputs (`input_ids`, `attention_mask`) and decoder `decoder_input_ids` / `labels`
    (IGNORE on padding)."""
    n = len(examples)
    t_enc = max(len(e["input_ids"]) for e in examples)
    t_dec = max(len(e["labels"]) for e in examples)
    input_ids = torch.full((n, t_enc), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, t_enc), dtype=torch.long)
    labels = torch.full((n, t_dec), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        input_ids[r, : len(e["input_ids"])] = torch.tensor(e["input_ids"], dtype=torch.long)
        attention_mask[r, : len(e["input_ids"])] = 1
        labels[r, : len(e["labels"])] = torch.tensor(e["labels"], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "decoder_input_ids": shift_right(labels, start_id, pad_id), "labels": labels,
            "num_tokens": int(attention_mask.sum()) + int((labels != IGNORE).sum())}


@contextlib.contextmanager
def project_only_at(model, keep: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's output layer sees only the decoder states at `keep` (a [N, T] bool mask), so
    the vocabulary projection skips the decoder's padding and `logits` come back as [keep.sum(), V]."""
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: (args[0][keep], *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def token_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the decoder's target tokens (as `model(..., labels=labels).loss`) and their count.
    The vocabulary projection runs at the target positions only (`project_only_at`)."""
    labels = batch["labels"]
    keep = labels != IGNORE
    with project_only_at(model, keep):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
    if logits.dim() != 2 or logits.shape[0] != int(keep.sum()):
        raise FlanmixError(f"{type(model).__name__} does not project its decoder states with its output layer",
                           field="model", expected="an encoder-decoder LM whose logits are lm_head(decoder states)")
    return completion_nll(logits, labels[keep]), keep.sum()


# ------------------------------------------------------------------------------------------- preference batches


def split_prompt_completion(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor,
                            pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``prompt + completion`` (right-padded, `loss_mask` 1 on the completion) -> encoder ids, encoder
    mask and decoder labels [N, C] (IGNORE past each completion)."""
    prompt_len = ((attention_mask != 0) & (loss_mask == 0)).sum(-1)
    comp_len = (loss_mask != 0).sum(-1)
    t_enc, t_dec = int(prompt_len.max()), max(1, int(comp_len.max()))
    cols = torch.arange(t_enc, device=input_ids.device)[None, :]
    enc_mask = (cols < prompt_len[:, None]).long()
    enc_ids = input_ids[:, :t_enc].masked_fill(enc_mask == 0, pad_id)
    j = torch.arange(t_dec, device=input_ids.device)[None, :]
    src = (prompt_len[:, None] + j).clamp(max=input_ids.shape[1] - 1)
    labels = input_ids.gather(1, src).masked_fill(j >= comp_len[:, None], IGNORE)
    return enc_ids, enc_mask, labels


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(completion_t | prompt, completion_<t) of the decoder [N, C] (zero past the completion) and
    the completion mask [N, C], for rows in the `trainers.preference.collate` layout."""
    pad = int(model.config.pad_token_id if model.config.pad_token_id is not None else 0)
    enc_ids, enc_mask, labels = split_prompt_completion(input_ids, attention_mask, loss_mask, pad)
    logits = model(input_ids=enc_ids, attention_mask=enc_mask,
                   decoder_input_ids=shift_right(labels, decoder_start_id(model), pad), use_cache=False).logits
    mask = labels != IGNORE
    logps = -F.cross_entropy(logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none")
    return logps * mask, mask.to(logps.dtype)


# ------------------------------------------------------------------------------------------------- inference


def cache_kwarg(model) -> str:
    """The forward() keyword of the KV cache: `cache` (transformers >= 5.24) or `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache of a forward output, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def greedy_decode(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, pad_id: int, eos_id: int | None,
                  stop: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Greedy decoder tokens (EOS excluded) for a batch of encoder inputs: the encoder runs once, the decoder one
    token per step with a KV cache. A row ends at EOS, after `max_new_tokens`, or when `stop(row, tokens)` says so."""
    device = next(model.parameters()).device
    ids, mask = pad_rows(prompts, pad_id, device)
    encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
    n = len(prompts)
    feed = torch.full((n, 1), decoder_start_id(model), dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    kw, past = cache_kwarg(model), None
    for _ in range(max_new_tokens):
        extra = {kw: past} if past is not None else {}
        out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=feed, use_cache=True, **extra)
        past = output_cache(out)
        nxt = out.logits[:, -1, :].argmax(-1)
        for r, tid in enumerate(nxt.tolist()):
            if done[r]:
                continue
            if eos_id is not None and tid == eos_id:
                done[r] = True
                continue
            tokens[r].append(tid)
            if stop is not None and stop(r, tokens[r]):
                done[r] = True
        if all(done):
            break
        feed = nxt[:, None].masked_fill(torch.tensor(done, device=device)[:, None], pad_id)
    return tokens


@torch.inference_mode()
def option_logprobs(model, prompt: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]], *,
                    pad_id: int) -> list[list[tuple[float, int]]]:
    """(sum of decoder log-probs, tokens) of every option (target ids, EOS included) of every prompt (encoder ids).
    Each prompt is encoded once; its encoder states are repeated for its options."""
    from transformers.modeling_outputs import BaseModelOutput  # transformers loads with the model, not here

    device = next(model.parameters()).device
    ids, mask = pad_rows(prompt, pad_id, device)
    hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    rows = [(b, k) for b, opts in enumerate(options) for k in range(len(opts))]
    index = torch.tensor([b for b, _ in rows], dtype=torch.long, device=device)
    labels, _ = pad_rows([options[b][k] for b, k in rows], IGNORE, device)
    out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[index]), attention_mask=mask[index],
                decoder_input_ids=shift_right(labels, decoder_start_id(model), pad_id), use_cache=False)
    valid = labels != IGNORE
    logps = -F.cross_entropy(out.logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none")
    totals = (logps * valid).double().sum(-1).tolist()
    counts = valid.sum(-1).tolist()
    result: list[list[tuple[float, int]]] = [[] for _ in prompt]
    for r, (b, _) in enumerate(rows):
        result[b].append((float(totals[r]), int(counts[r])))
    return result
