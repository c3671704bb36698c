"""Preference batches for the RM, DPO and RRHF stages: tokenization of `Group`s, collation (padded and
prefix-shared) and the shared stage data plumbing. The data itself (rows, importers, files) is
`flanmix.preferences`.

Tokenization: the prompt and prompt+completion are tokenized the same way and the prompt tokens must be a prefix
of the joint tokens (otherwise the completion is tokenized on its own and appended); EOS is appended to every
completion and counted in the loss mask. Collated batches are right-padded; see `collate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from flanmix.core.errors import FlanmixError
from flanmix.preferences import Group, load_preferences, split_groups

Text = str | list  # a string, or a list of chat messages


# ------------------------------------------------------------------------------------------------ tokenization

def _fallback_chat(messages: list, add_generation_prompt: bool) -> str:
    text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return text + ("<|assistant|>\n" if add_generation_prompt else "")


def render_prompt(tokenizer, prompt: Any) -> str:
    """Prompt text: a string as is, messages through the tokenizer's chat template (a plain fallback without)."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return _fallback_chat(prompt, True)


def render_completion(tokenizer, prompt: Any, response: Any) -> str:
    """Completion text that follows `render_prompt(prompt)`; EOS is added at tokenization, not here."""
    if isinstance(response, str):
        return response
    if isinstance(prompt, str):
        return "\n".join(str(m["content"]) for m in response)
    if getattr(tokenizer, "chat_template", None):
        p = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(list(prompt) + list(response), tokenize=False)
        if not full.startswith(p):
            raise FlanmixError("the chat template renders the prompt differently inside the conversation",
                               field="chat_template", expected="prompt render to be a prefix of the full render")
        comp = full[len(p):]
        eos = tokenizer.eos_token or ""
        if eos and comp.rstrip().endswith(eos):  # EOS is appended once, as a token
            comp = comp.rstrip()[: -len(eos)]
        return comp
    return "".join(f"{m['content']}\n" if i < len(response) - 1 else str(m["content"])
                   for i, m in enumerate(response))


def encode_prompt_completion(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(prompt_ids, completion_ids + [eos]).

    The joint text is tokenized once and the prompt tokens must be its prefix, so the boundary is exactly where
    the model will see it at generation time; otherwise (a merge across the boundary) the completion is tokenized
    on its own and appended.
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer(prompt + completion, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if full[: len(p)] == p:
        c = full[len(p):]
    else:
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if eos is not None and c and c[-1] == eos:
        c = c[:-1]
    if not c:
        raise FlanmixError("the completion tokenizes to nothing", field="completion", expected="non-empty text")
    if eos is not None:
        c = c + [eos]
    return p, c


@dataclass
class EncodedGroup:
    prompt_ids: list[int]
    responses_ids: list[list[int]]
    scores: list[float]
    margin: float | None = None
    ref_logps: list[float] | None = None  # precomputed reference log-probs, one per response
    extra: dict = field(default_factory=dict)

    def pairs(self) -> list[tuple[int, int]]:
        k = len(self.responses_ids)
        return [(i, j) for i in range(k) for j in range(k) if self.scores[i] > self.scores[j]]


def encode_group(tokenizer, group: Group, max_length: int) -> EncodedGroup:
    """Tokenize one group; the prompt is cut from the left and completions from the right to fit max_length."""
    prompt = render_prompt(tokenizer, group.prompt)
    encs = [encode_prompt_completion(tokenizer, prompt, render_completion(tokenizer, group.prompt, r))
            for r in group.responses]
    prompt_ids = encs[0][0]
    # All responses share the prompt tokens (the prefix check may have fallen back for some).
    comps = [e[1] if e[0] == prompt_ids else tokenizer(render_completion(tokenizer, group.prompt, r),
                                                        add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
             for e, r in zip(encs, group.responses)]
    longest = max(len(c) for c in comps)
    if len(prompt_ids) + longest > max_length:
        keep = max(max_length - longest, max_length // 2)
        prompt_ids = prompt_ids[-keep:] if keep > 0 else []
        comps = [c[: max_length - len(prompt_ids)] for c in comps]
    return EncodedGroup(prompt_ids, comps, list(group.scores), group.margin)


def encode_groups(tokenizer, groups: Sequence[Group], max_length: int) -> list[EncodedGroup]:
    out = []
    for g in groups:
        try:
            out.append(encode_group(tokenizer, g, max_length))
        except FlanmixError as err:
            raise err.with_context(file=g.source) from None
    return out


def collate(groups: Sequence[EncodedGroup], pad_id: int) -> dict:
    """Right-padded batch of every response of every group.

    Sequences are ordered response-major (response 0 of every group, then response 1, …), so a batch of pairs is
    ``[chosen…, rejected…]``. Keys: ``input_ids, attention_mask, loss_mask [N, T]`` (loss_mask = completion + EOS),
    ``group, scores, lengths [N]``, ``pair_chosen, pair_rejected, pair_group, pair_margin [P]`` (indices into N),
    and ``ref_logps [N]`` when every group carries precomputed reference log-probs.
    """
    import torch

    batch = collate_meta(groups)
    order = batch.pop("_order")
    seqs = [groups[gi].prompt_ids + groups[gi].responses_ids[r] for gi, r in order]
    T = max(len(s) for s in seqs)
    N = len(seqs)
    input_ids = torch.full((N, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((N, T), dtype=torch.long)
    loss_mask = torch.zeros((N, T), dtype=torch.long)
    for n, ((gi, r), s) in enumerate(zip(order, seqs)):
        input_ids[n, : len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[n, : len(s)] = 1
        loss_mask[n, len(groups[gi].prompt_ids): len(s)] = 1
    batch.update({"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask,
                  "lengths": attention_mask.sum(-1)})
    return batch


class GroupCollator:
    """Callable collator for a DataLoader over EncodedGroups."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, groups: Sequence[EncodedGroup]) -> dict:
        return collate(groups, self.pad_id)


def pad_id_of(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id
    if pid is None:
        raise FlanmixError("the tokenizer has neither a pad nor an EOS token", field="tokenizer")
    return pid



def load_tokenizer(path: str | Path):
    """Tokenizer of a local model folder, with a pad token (EOS when it has none); see trainers.models."""
    from trainers.models import load_tokenizer as _load

    return _load(path)


def load_split(data: Any, eval_data: Any, eval_fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """(train, held-out) groups: `eval_data` when given, else a seeded fraction of `data`."""
    groups = data if isinstance(data, list) else load_preferences(data)
    if eval_data is not None:
        return groups, (eval_data if isinstance(eval_data, list) else load_preferences(eval_data))
    return split_groups(groups, eval_fraction, seed)


# ------------------------------------------------------------------------------------------- stage plumbing

def parse_config(config: Any, overrides: dict, cls):
    """A stage config from a YAML path, a mapping or a config object, with keyword overrides on top."""
    from trainers.config import load_config, validate

    if isinstance(config, (str, Path)):
        cfg = load_config(config, cls)
        if overrides:
            cfg = validate({**cfg.model_dump(exclude_unset=True), **overrides}, cls, source=config)
        return cfg
    data = config.model_dump(exclude_unset=True) if isinstance(config, cls) else dict(config)
    return validate({**data, **overrides}, cls)


def write_run_info(cfg, name: str, extra: dict | None = None) -> None:
    """`<output_dir>/<name>_config.json`: the resolved config (and any extra facts) of a run."""
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {**cfg.model_dump(), **(extra or {})}
    (out / f"{name}_config.json").write_text(json.dumps(info, indent=1, default=str))


def collate_shared(groups: Sequence[EncodedGroup], pad_id: int, dtype=None) -> dict:
    """Prefix-shared batch: one row per prompt, ``prompt + response_1 + … + response_k``.

    Each response attends to the prompt and to itself only (an additive 4D mask) and its positions continue from
    the prompt, so every response sees exactly what it would see alone — while the prompt is encoded once per
    group instead of k times, with no padding inside a row. Besides the keys of `collate` (``group``, ``scores``,
    ``pair_*``, ``ref_logps``; same response-major sequence order), it holds ``input_ids, position_ids [G, L]``,
    ``attention_mask [G, 1, L, L]``, the completion tokens as ``tok_row, tok_src, tok_tgt, tok_seq`` (the logits at
    (row, src) predict input_ids[row, tgt] of sequence tok_seq) and the last token of each sequence as
    ``last_row, last_pos``.
    """
    import torch

    dtype = dtype or torch.float32
    base = collate_meta(groups)
    order = base.pop("_order")
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


def collate_meta(groups: Sequence[EncodedGroup]) -> dict:
    """The sequence order and the per-sequence / per-pair tensors shared by `collate` and `collate_shared`."""
    import torch

    order: list[tuple[int, int]] = []
    kmax = max(len(g.responses_ids) for g in groups)
    for r in range(kmax):
        for gi, g in enumerate(groups):
            if r < len(g.responses_ids):
                order.append((gi, r))
    pos = {gr: n for n, gr in enumerate(order)}
    pc, pr, pg, pm = [], [], [], []
    for gi, g in enumerate(groups):
        for i, j in g.pairs():
            pc.append(pos[(gi, i)])
            pr.append(pos[(gi, j)])
            pg.append(gi)
            pm.append(g.margin if g.margin is not None else 0.0)
    out = {
        "_order": order,
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


def is_shared(batch: dict) -> bool:
    return "tok_row" in batch


class GroupDataStage:
    """What the RM, DPO and RRHF stages share: train/held-out groups (`_train`, `_eval`) and collation, with
    prompt sharing (`prefix_sharing`) or padded pairs, using the stage's `pad_id`."""

    _train: Sequence[EncodedGroup]
    _eval: Sequence[EncodedGroup] | None
    prefix_sharing: bool
    pad_id: int

    def train_dataset(self):
        return self._train

    def eval_dataset(self):
        return self._eval

    def collate(self, rows):
        return (collate_shared if self.prefix_sharing else collate)(rows, self.pad_id)
