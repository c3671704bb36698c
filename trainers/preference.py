"""Preference batches for the RM, DPO, RRHF (and PPO) stages: tokenization of `Group`s, collation (padded and
prefix-shared) and the shared stage data plumbing. The data itself (rows, importers, files) is
`flanmix.preferences`.

Tokenization follows the one rule of `trainers.data.prompt_completion_ids`: the prompt is tokenized as inference
sees it, each completion on its own, then EOS (counted in the loss mask); so a (prompt, completion) pair gets the
same ids here as in SFT. Collated batches are right-padded; see `collate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flanmix.core.errors import FlanmixError
from flanmix.preferences import Group, load_preferences, read_rows, split_groups
from trainers import seq2seq
from trainers.chat import ensure_chat_template, render_chat, response_turn
from trainers.data import adds_bos, prompt_completion_ids, prompt_ids, response_ids
from trainers.protocol import Stage

# ------------------------------------------------------------------------------------------------ tokenization


def render_prompt(tokenizer, prompt: Any) -> str:
    """Prompt text: a string as is, messages through the tokenizer's chat template (`trainers.chat`; its default
    template without one). Token ids of a prompt come from `trainers.data.prompt_ids`, which takes the messages."""
    if isinstance(prompt, str):
        return prompt
    return render_chat(tokenizer, prompt, generation_prompt=True)


def render_completion(tokenizer, prompt: Any, response: Any) -> str:
    """Completion text that follows `render_prompt(prompt)`; EOS is added at tokenization, not here."""
    if isinstance(response, str):
        return response
    if isinstance(prompt, str):
        return "\n".join(str(m["content"]) for m in response)
    comp, _ = response_turn(tokenizer, prompt, response)
    eos = tokenizer.eos_token or ""
    return comp[: -len(eos)] if eos and comp.endswith(eos) else comp  # EOS is appended once, as a token


def check_completion(ids: list[int]) -> list[int]:
    """`ids` (completion + EOS), or FlanmixError when the completion itself has no tokens."""
    if len(ids) < 2:
        raise FlanmixError("the completion tokenizes to nothing", field="completion", expected="non-empty text")
    return ids


def encode_prompt_completion(tokenizer, prompt: str, completion: str, *, bos: bool | None = None
                             ) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids + [eos]) by the shared rule (`trainers.data.prompt_completion_ids`)."""
    p, c = prompt_completion_ids(tokenizer, prompt, completion, bos=bos)
    return p, check_completion(c)


@dataclass
class EncodedGroup:
    """A tokenized `Group`: the prompt's ids and each response's ids (EOS included), with the scores."""

    prompt_ids: list[int]
    responses_ids: list[list[int]]
    scores: list[float]
    margin: float | None = None
    ref_logps: list[float] | None = None  # precomputed reference log-probs, one per response
    encoder_decoder: bool = False         # prompt ids are encoder ids (`trainers.seq2seq`): never prefix-shared

    def pairs(self) -> list[tuple[int, int]]:
        k = len(self.responses_ids)
        return [(i, j) for i in range(k) for j in range(k) if self.scores[i] > self.scores[j]]


def encode_group(tokenizer, group: Group, max_length: int, *, bos: bool | None = None,
                 encoder_decoder: bool = False) -> EncodedGroup:
    """Tokenize one group; the prompt is cut from the left and completions from the right to fit max_length.
    `encoder_decoder`: the prompt as encoder input and each response as decoder target (`trainers.seq2seq`), each
    within max_length."""
    if encoder_decoder:
        prompt = seq2seq.encoder_ids(tokenizer, render_prompt(tokenizer, group.prompt))
        comps = [check_completion(seq2seq.target_ids(tokenizer, render_completion(tokenizer, group.prompt, r))
                                  [:max_length]) for r in group.responses]
        prompt = seq2seq.truncate_encoder(prompt, max_length, tokenizer.eos_token_id)
        return EncodedGroup(prompt, comps, list(group.scores), group.margin, encoder_decoder=True)
    if not isinstance(group.prompt, str):
        ensure_chat_template(tokenizer)  # a saved policy keeps the format it was trained with
    prompt = prompt_ids(tokenizer, group.prompt, bos=bos)  # a conversation: through the chat template
    comps = [check_completion(response_ids(tokenizer, group.prompt, r)) for r in group.responses]
    longest = max(len(c) for c in comps)
    if len(prompt) + longest > max_length:
        keep = max(max_length - longest, max_length // 2)
        prompt = prompt[-keep:] if keep > 0 else []
        comps = [c[: max_length - len(prompt)] for c in comps]
    return EncodedGroup(prompt, comps, list(group.scores), group.margin)


def encode_groups(tokenizer, groups: Sequence[Group], max_length: int, *,
                  encoder_decoder: bool = False) -> list[EncodedGroup]:
    """Tokenize groups (see `encode_group`); an error names the group's file and line."""
    bos = adds_bos(tokenizer)
    out = []
    for g in groups:
        try:
            out.append(encode_group(tokenizer, g, max_length, bos=bos, encoder_decoder=encoder_decoder))
        except FlanmixError as err:
            raise err.with_context(file=g.source) from None
    return out


# --------------------------------------------------------------------------------------------------- collation


def sequence_order(groups: Sequence[EncodedGroup]) -> list[tuple[int, int]]:
    """(group, response) of each sequence of a batch, response-major: response 0 of every group, then 1, ..."""
    kmax = max(len(g.responses_ids) for g in groups)
    return [(gi, r) for r in range(kmax) for gi, g in enumerate(groups) if r < len(g.responses_ids)]


def collate_meta(groups: Sequence[EncodedGroup], order: Sequence[tuple[int, int]]) -> dict:
    """The per-sequence / per-pair tensors shared by `collate` and `collate_shared`."""
    pos = {gr: n for n, gr in enumerate(order)}
    pc, pr, pg, pm = [], [], [], []
    for gi, g in enumerate(groups):
        for i, j in g.pairs():
            pc.append(pos[(gi, i)])
            pr.append(pos[(gi, j)])
            pg.append(gi)
            pm.append(g.margin if g.margin is not None else 0.0)
    out = {
        "group": torch.tensor([gi for gi, _ in order], dtype=torch.long),
        "scores": torch.tensor([groups[gi].scores[r] for gi, r in order], dtype=torch.float32),
        "response_lengths": torch.tensor([len(groups[gi].responses_ids[r]) for gi, r in order], dtype=torch.long),
        "pair_chosen": torch.tensor(pc, dtype=torch.long),
        "pair_rejected": torch.tensor(pr, dtype=torch.long),
        "pair_group": torch.tensor(pg, dtype=torch.long),
        "pair_margin": torch.tensor(pm, dtype=torch.float32),
    }
    if all(g.ref_logps is not None for g in groups):
        out["ref_logps"] = torch.tensor([groups[gi].ref_logps[r] for gi, r in order], dtype=torch.float32)
    return out


def collate(groups: Sequence[EncodedGroup], pad_id: int) -> dict:
    """Right-padded batch of every response of every group.

    Sequences are ordered response-major (`sequence_order`), so a batch of pairs is ``[chosen…, rejected…]``. Keys:
    ``input_ids, attention_mask, loss_mask [N, T]`` (loss_mask = completion + EOS), ``group, scores, lengths [N]``,
    ``pair_chosen, pair_rejected, pair_group, pair_margin [P]`` (indices into N), and ``ref_logps [N]`` when every
    group carries precomputed reference log-probs.
    """
    order = sequence_order(groups)
    batch = collate_meta(groups, order)
    seqs = [groups[gi].prompt_ids + groups[gi].responses_ids[r] for gi, r in order]
    T = max(len(s) for s in seqs)
    N = len(seqs)
    input_ids = torch.full((N, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((N, T), dtype=torch.long)
    loss_mask = torch.zeros((N, T), dtype=torch.long)
    for n, ((gi, _), s) in enumerate(zip(order, seqs)):
        input_ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[n, : len(s)] = 1
        loss_mask[n, len(groups[gi].prompt_ids): len(s)] = 1
    batch.update({"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask,
                  "lengths": attention_mask.sum(-1)})
    return batch


def collate_shared(groups: Sequence[EncodedGroup], pad_id: int, dtype=None) -> dict:
    """Prefix-shared batch: one row per prompt, ``prompt + response_1 + … + response_k``.

    Each response attends to the prompt and to itself only (an additive 4D mask) and its positions continue from
    the prompt, so every response sees exactly what it would see alone — while the prompt is encoded once per
    group instead of k times, with no padding inside a row. Besides the keys of `collate` (``group``, ``scores``,
    ``pair_*``, ``ref_logps``; same response-major sequence order), it holds ``input_ids, position_ids [G, L]``,
    ``attention_mask [G, 1, L, L]``, the completion tokens as ``tok_row, tok_src, tok_tgt, tok_seq`` (the logits at
    (row, src) predict input_ids[row, tgt] of sequence tok_seq) and the last token of each sequence as
    ``last_row, last_pos``. Encoder-decoder groups get the padded `collate` batch (the encoder sees the prompt
    once per sequence).
    """
    if groups and groups[0].encoder_decoder:
        return collate(groups, pad_id)
    dtype = dtype or torch.float32
    order = sequence_order(groups)
    base = collate_meta(groups, order)
    pos_of = {gr: n for n, gr in enumerate(order)}
    G = len(groups)
    L = max(len(g.prompt_ids) + sum(len(r) for r in g.responses_ids) for g in groups)
    input_ids = torch.full((G, L), pad_id, dtype=torch.long)
    position_ids = torch.zeros((G, L), dtype=torch.long)
    seg = torch.full((G, L), -1, dtype=torch.long)  # -1 pad, 0 prompt, i + 1 response i
    tok_row, tok_src, tok_tgt, tok_seq = [], [], [], []
    last_row = [0] * len(order)
    last_pos = [0] * len(order)
    for gi, g in enumerate(groups):
        P = len(g.prompt_ids)
        input_ids[gi, :P] = torch.tensor(g.prompt_ids, dtype=torch.long)
        position_ids[gi, :P] = torch.arange(P)
        seg[gi, :P] = 0
        start = P
        for r, resp in enumerate(g.responses_ids):
            n = pos_of[(gi, r)]
            end = start + len(resp)
            input_ids[gi, start:end] = torch.tensor(resp, dtype=torch.long)
            position_ids[gi, start:end] = torch.arange(P, P + len(resp))
            seg[gi, start:end] = r + 1
            for t in range(len(resp)):
                if t == 0 and P == 0:
                    continue  # nothing predicts the very first token
                tok_row.append(gi)
                tok_src.append(P - 1 if t == 0 else start + t - 1)
                tok_tgt.append(start + t)
                tok_seq.append(n)
            last_row[n], last_pos[n] = gi, end - 1
            start = end
    idx = torch.arange(L)
    causal = idx[None, :] <= idx[:, None]                                   # [L(q), L(k)]
    sk, sq = seg[:, None, :], seg[:, :, None]                               # [G, 1, L(k)], [G, L(q), 1]
    allowed = causal[None] & (sk >= 0) & (sq >= 0) & ((sk == 0) | (sk == sq))
    allowed |= torch.eye(L, dtype=torch.bool)[None]                         # padding rows attend to themselves
    mask = torch.zeros((G, 1, L, L), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    base.update({
        "input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
        "tok_row": torch.tensor(tok_row, dtype=torch.long), "tok_src": torch.tensor(tok_src, dtype=torch.long),
        "tok_tgt": torch.tensor(tok_tgt, dtype=torch.long), "tok_seq": torch.tensor(tok_seq, dtype=torch.long),
        "last_row": torch.tensor(last_row, dtype=torch.long), "last_pos": torch.tensor(last_pos, dtype=torch.long),
        "num_tokens": int((seg >= 0).sum()),
    })
    return base


def pad_id_of(tokenizer) -> int:
    """The pad id of a tokenizer (EOS when it has no pad token)."""
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id
    if pid is None:
        raise FlanmixError("the tokenizer has neither a pad nor an EOS token", field="tokenizer")
    return pid


# ------------------------------------------------------------------------------------------- stage plumbing


def load_split(data: Any, eval_data: Any, eval_fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """(train, held-out) groups: `eval_data` when given, else a seeded fraction of `data`."""
    groups = data if isinstance(data, list) else load_preferences(data)
    if eval_data is not None:
        return groups, (eval_data if isinstance(eval_data, list) else load_preferences(eval_data))
    return split_groups(groups, eval_fraction, seed)


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt rows from a JSONL/JSON file: any row with ``prompt`` (or ``inputs`` / ``messages``) — preference
    files and rendered examples work as they are; other fields (e.g. ``answer``) reach the reward function."""
    out = []
    for row, where in read_rows(path):
        prompt = row.get("prompt", row.get("messages", row.get("inputs")))
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise FlanmixError("row has no prompt", file=where, field="prompt")
        out.append({**row, "prompt": prompt})
    return out


class GroupDataStage(Stage):
    """What the RM, DPO and RRHF stages share: train/held-out groups (`train_groups`, `eval_groups`) and
    collation, with prompt sharing (`prefix_sharing`) or padded pairs, using the stage's `pad_id`."""

    train_groups: Sequence[EncodedGroup]
    eval_groups: Sequence[EncodedGroup] | None
    prefix_sharing: bool
    pad_id: int

    def train_dataset(self):
        return self.train_groups

    def eval_dataset(self):
        return self.eval_groups

    def collate(self, rows):
        return (collate_shared if self.prefix_sharing else collate)(rows, self.pad_id)
