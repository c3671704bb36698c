"""Preference data: pairs and k-way rankings, plain text or chat `messages`, and their tokenization/collation.

Two row shapes (JSONL, one object a line), as in docs/DESIGN.md §3:

- pair:    ``{"prompt": ..., "chosen": ..., "rejected": ..., "margin": 0.5?}``
- ranking: ``{"prompt": ..., "responses": [...], "scores": [...]}`` (higher score = better)

``prompt`` is a string or a list of chat messages (``{"role", "content"}``); a response is a string, one assistant
message, or a list of messages. ``messages`` is accepted as a synonym of a conversational ``prompt``.

Both shapes are normalised to one `Group` (prompt, responses, scores, margin); a pair is the ranking
``[chosen, rejected]`` with scores ``[1, 0]``. Every stage then reads the *pairs* of a group — all ``(i, j)`` with
``score_i > score_j`` — so the reward model, DPO and RRHF see pairs and rankings the same way.

Loaders for the third-party preference sets in shared/data (HH-RLHF transcripts, PandaLM's three human labels,
LLaMA-Factory's ShareGPT pairs) turn them into the same rows; `load_preferences` detects the shape of a file.

Tokenization: the prompt and prompt+completion are tokenized the same way and the prompt tokens must be a prefix
of the joint tokens (otherwise the completion is tokenized on its own and appended); EOS is appended to every
completion and counted in the loss mask. Collated batches are right-padded; see `collate`.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from flanmix.errors import FlanmixError

Text = str | list  # a string, or a list of chat messages


@dataclass
class Group:
    """One prompt with its k ≥ 2 responses, their scores (higher is better) and an optional pair margin."""

    prompt: Any
    responses: list
    scores: list[float]
    margin: float | None = None
    source: str | None = None  # "file:line" for error messages

    def pairs(self) -> list[tuple[int, int]]:
        """All (better, worse) index pairs; ties give none."""
        k = len(self.responses)
        return [(i, j) for i in range(k) for j in range(k) if self.scores[i] > self.scores[j]]

    def to_row(self) -> dict:
        if len(self.responses) == 2 and self.scores == [1.0, 0.0]:
            row = {"prompt": self.prompt, "chosen": self.responses[0], "rejected": self.responses[1]}
            if self.margin is not None:
                row["margin"] = self.margin
            return row
        return {"prompt": self.prompt, "responses": self.responses, "scores": self.scores}


# --------------------------------------------------------------------------------------------------------- rows

def _is_messages(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in x)


def _response_text(x: Any) -> str:
    """The text a response carries, for emptiness / identity checks."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict) and "content" in x:
        return str(x["content"])
    if _is_messages(x):
        return "\n".join(str(m["content"]) for m in x)
    raise ValueError("not a response")


def _norm_response(x: Any, where: str, fld: str) -> Any:
    if isinstance(x, dict) and "content" in x:
        x = [{"role": x.get("role", "assistant"), "content": x["content"]}]
    if not (isinstance(x, str) or _is_messages(x)):
        raise FlanmixError("a response must be a string or a list of {role, content} messages",
                           file=where, field=fld)
    if not _response_text(x).strip():
        raise FlanmixError("empty response", file=where, field=fld, expected="non-empty text")
    return x


def row_to_group(row: dict, where: str = "<row>") -> Group:
    """Validate one pair or ranking row and normalise it to a `Group`. Raises FlanmixError on bad input."""
    if not isinstance(row, dict):
        raise FlanmixError("a preference row must be a JSON object", file=where)
    prompt = row.get("prompt", row.get("messages"))
    if prompt is None:
        raise FlanmixError("missing prompt", file=where, field="prompt", expected="'prompt' or 'messages'")
    if not (isinstance(prompt, str) or _is_messages(prompt)):
        raise FlanmixError("prompt must be a string or a list of {role, content} messages", file=where,
                           field="prompt")
    if "chosen" in row or "rejected" in row:
        if "chosen" not in row or "rejected" not in row:
            raise FlanmixError("a pair needs both 'chosen' and 'rejected'", file=where)
        chosen = _norm_response(row["chosen"], where, "chosen")
        rejected = _norm_response(row["rejected"], where, "rejected")
        if _response_text(chosen).strip() == _response_text(rejected).strip():
            raise FlanmixError("chosen is identical to rejected", file=where, field="rejected",
                               expected="a different response")
        margin = row.get("margin")
        if margin is not None and not (isinstance(margin, (int, float)) and math.isfinite(margin)):
            raise FlanmixError("margin must be a finite number", file=where, field="margin")
        return Group(prompt, [chosen, rejected], [1.0, 0.0], None if margin is None else float(margin), where)
    if "responses" in row:
        responses, scores = row["responses"], row.get("scores")
        if not isinstance(responses, list) or len(responses) < 2:
            raise FlanmixError("a ranking needs at least 2 responses", file=where, field="responses")
        if not isinstance(scores, list) or len(scores) != len(responses):
            raise FlanmixError("scores must be a list as long as responses", file=where, field="scores")
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores):
            raise FlanmixError("scores must be finite numbers", file=where, field="scores")
        responses = [_norm_response(r, where, f"responses[{i}]") for i, r in enumerate(responses)]
        if len(set(scores)) == 1:
            raise FlanmixError("all scores are equal, so the ranking says nothing", file=where, field="scores",
                               expected="at least two different scores")
        return Group(prompt, responses, [float(s) for s in scores], None, where)
    raise FlanmixError("unknown preference row", file=where,
                       expected="prompt+chosen+rejected or prompt+responses+scores")


# ------------------------------------------------------------------------------------------- third-party sets

HH_SPLIT = "\n\nAssistant:"


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def hh_rlhf_rows(path: str | Path) -> tuple[list[dict], int]:
    """HH-RLHF transcripts split at the last ``\\n\\nAssistant:``; returns (rows, dropped).

    Rows whose two transcripts do not share the prompt, or whose last turns are identical or empty, are dropped.
    """
    path = Path(path)
    rows, dropped = [], 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            c, r = obj["chosen"], obj["rejected"]
            ic, ir = c.rfind(HH_SPLIT), r.rfind(HH_SPLIT)
            if ic < 0 or ir < 0:
                dropped += 1
                continue
            prompt_c, prompt_r = c[: ic + len(HH_SPLIT)], r[: ir + len(HH_SPLIT)]
            chosen, rejected = c[ic + len(HH_SPLIT):], r[ir + len(HH_SPLIT):]
            if prompt_c != prompt_r or not chosen.strip() or not rejected.strip() \
                    or chosen.strip() == rejected.strip():
                dropped += 1
                continue
            rows.append({"prompt": prompt_c, "chosen": chosen, "rejected": rejected})
    return rows, dropped


def pandalm_rows(path: str | Path, vote: str = "unanimous") -> tuple[list[dict], int]:
    """PandaLM human test set: keep rows whose three labels agree and are not a tie (``vote='unanimous'``), or
    a 2-of-3 non-tie majority (``vote='majority'``). Label 1 = response1 better, 2 = response2 better."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows, dropped = [], 0
    for obj in data:
        labels = [obj.get(f"annotator{i}") for i in (1, 2, 3)]
        if vote == "unanimous":
            winner = labels[0] if labels[0] in (1, 2) and labels.count(labels[0]) == 3 else None
        else:
            winner = next((v for v in (1, 2) if labels.count(v) >= 2), None)
        # a few responses were stored as JSON booleans/numbers (e.g. `true` for "True"): keep them as text
        r1, r2 = (_as_text(obj.get(f"response{i}")) for i in (1, 2))
        if winner is None or not r1.strip() or not r2.strip() or r1.strip() == r2.strip():
            dropped += 1
            continue
        prompt = _as_text(obj["instruction"]) + (f"\n\n{_as_text(obj['input'])}" if obj.get("input") else "")
        chosen, rejected = (r1, r2) if winner == 1 else (r2, r1)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows, dropped


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    return v if isinstance(v, str) else str(v)


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system"}


def sharegpt_rows(path: str | Path) -> tuple[list[dict], int]:
    """LLaMA-Factory ShareGPT pairs → conversational rows (``prompt`` messages, one assistant message each)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows, dropped = [], 0
    for obj in data:
        msgs = [{"role": _SHAREGPT_ROLES.get(m["from"], m["from"]), "content": m["value"]}
                for m in obj["conversations"]]
        c, r = obj["chosen"]["value"], obj["rejected"]["value"]
        if not c.strip() or not r.strip() or c.strip() == r.strip():
            dropped += 1
            continue
        rows.append({"prompt": msgs, "chosen": [{"role": "assistant", "content": c}],
                     "rejected": [{"role": "assistant", "content": r}]})
    return rows, dropped


IMPORTERS = {"hh-rlhf": hh_rlhf_rows, "pandalm": pandalm_rows, "sharegpt": sharegpt_rows}


def detect_format(path: Path) -> str:
    """'hh-rlhf', 'pandalm', 'sharegpt' or 'rows' (our own JSONL/JSON rows)."""
    with _open_text(path) as fh:
        head = fh.read(4096).lstrip()
    if head.startswith("["):
        if '"annotator1"' in head:
            return "pandalm"
        if '"conversations"' in head:
            return "sharegpt"
        return "rows"
    first = head.splitlines()[0] if head else ""
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return "rows"
    if isinstance(obj, dict) and "prompt" not in obj and "messages" not in obj \
            and isinstance(obj.get("chosen"), str) and obj["chosen"].lstrip().startswith("Human:"):
        return "hh-rlhf"
    return "rows"


def read_rows(path: str | Path) -> list[tuple[dict, str]]:
    """(row, 'file:line') for every row of a JSONL (optionally .gz) or JSON-list file."""
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("preference file not found", file=path)
    out = []
    with _open_text(path) as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise FlanmixError(f"invalid JSON: {err.msg}", file=path, line=err.lineno) from None
        return [(row, f"{path}[{i}]") for i, row in enumerate(data)]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((json.loads(line), f"{path}:{n}"))
        except json.JSONDecodeError as err:
            raise FlanmixError(f"invalid JSON: {err.msg}", file=path, line=n) from None
    return out


def load_preferences(path: str | Path, fmt: str = "auto") -> list[Group]:
    """Load and validate a preference file (our rows, or an HH-RLHF / PandaLM / ShareGPT file) as Groups."""
    path = Path(path)
    if not path.is_file():
        raise FlanmixError("preference file not found", file=path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in IMPORTERS:
        rows, _ = IMPORTERS[fmt](path)
        return [row_to_group(r, f"{path}[{i}]") for i, r in enumerate(rows)]
    groups = [row_to_group(row, where) for row, where in read_rows(path)]
    if not groups:
        raise FlanmixError("no preference rows", file=path)
    return groups


def write_rows(rows: Iterable[dict], out: str | Path) -> int:
    """Write rows as JSONL atomically; returns the count."""
    import os

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, out)
    return n


def split_groups(groups: Sequence[Group], eval_fraction: float, seed: int = 0) -> tuple[list[Group], list[Group]]:
    """Seeded train/held-out split by prompt."""
    import random

    idx = list(range(len(groups)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(len(groups) * eval_fraction))
    if eval_fraction > 0 and n_eval == 0 and len(groups) > 1:
        n_eval = 1
    held = set(idx[:n_eval])
    return [g for i, g in enumerate(groups) if i not in held], [g for i, g in enumerate(groups) if i in held]


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
