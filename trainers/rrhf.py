"""RRHF stage (Yuan et al. 2023): rank responses by length-normalised log-probability, plus SFT on the best.

For a prompt x with k responses y_1..y_k and their scores r_1..r_k (reward model, programmatic, or given):

    p_i     = (1/|y_i|) Σ_t log π(y_{i,t} | x, y_{i,<t})                  (eq. 1, length-normalised)
    L_rank  = Σ_{r_i < r_j} max(0, p_i − p_j)                            (eq. 2)
    L_ft    = − (1/|y_best|) Σ_t log π(y_{best,t} | x, y_{best,<t})       (eq. 3, y_best = argmax_i r_i)
    L       = L_rank + λ · L_ft                                            (eq. 4)

Ties (r_i == r_j) give no rank term. The loss is computed per prompt and averaged over the prompts of the batch,
so any batch size works (the k responses of a prompt are grouped by the collator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings
from trainers.dpo import PolicyPreferenceStage, load_policy
from trainers.logprobs import batch_sequence_logprobs


def rrhf_loss_from_scores(p: torch.Tensor, batch: dict, sft_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """RRHF loss given per-sequence length-normalised log-probs `p` [N] of a collated batch."""
    group, scores = batch["group"].to(p.device), batch["scores"].to(p.device)
    worse, better = batch["pair_rejected"].to(p.device), batch["pair_chosen"].to(p.device)
    n_groups = int(group.max().item()) + 1
    # L_rank: each (better j, worse i) pair contributes max(0, p_i − p_j) to its prompt
    hinge = torch.relu(p[worse] - p[better])
    rank = torch.zeros(n_groups, dtype=p.dtype, device=p.device).index_add(0, group[worse], hinge)
    # y_best per prompt: the first response with the top score
    best = torch.empty(n_groups, dtype=torch.long, device=p.device)
    for g in range(n_groups):
        idx = (group == g).nonzero().squeeze(-1)
        best[g] = idx[torch.argmax(scores[idx])]
    ft = -p[best]
    per_prompt = rank + sft_weight * ft
    with torch.no_grad():
        metrics = {
            "rank_loss": rank.mean().item(),
            "sft_loss": ft.mean().item(),
            "accuracy": (p[better] > p[worse]).float().mean().item() if better.numel() else 0.0,
        }
    return per_prompt.mean(), metrics


def rrhf_loss(model, batch: dict, sft_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    p = batch_sequence_logprobs(model, batch, average=True)
    return rrhf_loss_from_scores(p, batch, sft_weight)


class RRHFStage(PolicyPreferenceStage):
    """Stage protocol object for `trainers.loop.train` (see trainers/loop.py)."""

    name = "rrhf"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, *, sft_weight: float = 1.0,
                 prefix_sharing: bool = True):
        from trainers.preference import pad_id_of

        self.prefix_sharing = prefix_sharing
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.sft_weight = sft_weight
        self._train, self._eval = train_groups, eval_groups or None

    def count(self, batch) -> int:
        return int(batch["group"].max().item()) + 1

    def loss(self, model, batch):
        return rrhf_loss(model, batch, self.sft_weight)



@torch.no_grad()
def sample_candidates(model, tokenizer, prompts: list, k: int, max_new_tokens: int = 32,
                      temperature: float = 1.0, seed: int = 0, batch_size: int = 16) -> list[list[str]]:
    """k sampled completions per prompt from a causal LM (the SFT model in a pipeline)."""
    from trainers.preference import render_prompt

    torch.manual_seed(seed)
    was = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [render_prompt(tokenizer, p) for p in prompts[i: i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True)
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=k,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            comp = gen[:, enc["input_ids"].shape[1]:]
            dec = tokenizer.batch_decode(comp, skip_special_tokens=True)
            for j in range(len(texts)):
                out.append(dec[j * k: (j + 1) * k])
    finally:
        tokenizer.padding_side = side
        model.train(was)
    return out


def score_candidates_with_rm(rm_model, tokenizer, prompts: list, candidates: list[list[str]],
                             max_length: int = 256) -> list[list[float]]:
    """Reward-model scores of each candidate (read at the last non-pad token)."""
    from trainers.preference import collate, encode_prompt_completion, render_prompt, pad_id_of, EncodedGroup
    from trainers.rm import reward_scores

    rm_model.eval()
    out = []
    for prompt, cands in zip(prompts, candidates):
        p_text = render_prompt(tokenizer, prompt)
        encs = [encode_prompt_completion(tokenizer, p_text, c if c.strip() else " ") for c in cands]
        g = EncodedGroup(encs[0][0], [e[1][: max_length] for e in encs], [0.0] * len(cands))
        b = collate([g], pad_id_of(tokenizer))
        with torch.no_grad():
            r = reward_scores(rm_model, b["input_ids"], b["attention_mask"])
        out.append([float(x) for x in r])
    return out


class CandidateSpec(BaseModel):
    """RRHF candidates made on the fly: k samples per prompt from a model, scored by a reward model/function."""

    model_config = ConfigDict(extra="forbid")

    prompts: Optional[str] = None            # prompt rows (JSONL with prompt); default: the prompts of `data`
    sample_from: Optional[str] = None        # model folder to sample from; default: the stage's model
    k: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    reward_model: Optional[str] = None       # a reward-model folder (the rm stage's output) ...
    reward_fn: Optional[str] = None          # ... or 'module:function'(prompts, completions, rows) -> scores
    include_data: bool = True                # also rank the responses given in `data` (ground truth)
    max_prompts: Optional[int] = Field(None, ge=1)


class RRHFConfig(LoopSettings):
    """`flanmix train rrhf --config rrhf.yaml`: loop settings plus these."""

    model: str
    data: Optional[str] = None               # rankings / pairs; or prompts when `candidates` makes responses
    candidates: Optional[CandidateSpec] = None
    eval_data: Optional[str] = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    sft_weight: float = Field(1.0, ge=0)
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True              # encode each prompt once per group (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def make_candidate_groups(spec: CandidateSpec, model_path: str, data_groups, tokenizer, seed: int = 0):
    """Groups of sampled (+ given) responses with reward scores; groups whose scores all tie are dropped."""
    from trainers.dpo import load_policy
    from trainers.ppo import check_same_tokenizer, load_reward_fn, read_prompts
    from flanmix.preferences import Group, response_text
    from trainers.preference import load_tokenizer

    if (spec.reward_model is None) == (spec.reward_fn is None):
        raise FlanmixError("candidates need exactly one of reward_model and reward_fn", field="candidates")
    if spec.prompts:
        rows = read_prompts(spec.prompts)
        base = [Group(r["prompt"], [], [], None, None) for r in rows]
    elif data_groups:
        base = list(data_groups)
        rows = [{"prompt": g.prompt} for g in base]
    else:
        raise FlanmixError("candidates need prompts (candidates.prompts or data)", field="candidates.prompts")
    if spec.max_prompts:
        base, rows = base[: spec.max_prompts], rows[: spec.max_prompts]
    sampler = load_policy(spec.sample_from or model_path)
    prompts = [g.prompt for g in base]
    sampled = sample_candidates(sampler, tokenizer, prompts, spec.k, spec.max_new_tokens, spec.temperature, seed)
    del sampler
    cands = []
    for g, s in zip(base, sampled):
        extra = [response_text(r) for r in g.responses] if spec.include_data else []
        seen, lst = set(), []
        for c in extra + s:
            if c.strip() and c not in seen:
                seen.add(c)
                lst.append(c)
        cands.append(lst)
    if spec.reward_model is not None:
        from trainers.rm import load_reward_model

        rm = load_reward_model(spec.reward_model)
        check_same_tokenizer(tokenizer, load_tokenizer(spec.reward_model), spec.reward_model)
        scores = score_candidates_with_rm(rm, tokenizer, prompts, cands)
    else:
        fn = load_reward_fn(spec.reward_fn)
        scores = []
        for p, cs, row in zip(prompts, cands, rows):
            scores.append([float(x) for x in fn([p] * len(cs), cs, [row] * len(cs))])
    out = [Group(p, cs, sc, None, "candidates") for p, cs, sc in zip(prompts, cands, scores)
           if len(cs) >= 2 and len(set(sc)) > 1]
    if not out:
        raise FlanmixError("every candidate group had tied scores; nothing to rank", field="candidates")
    return out


def build_stage(cfg: RRHFConfig, groups=None, eval_groups=None) -> RRHFStage:
    from flanmix.preferences import load_preferences, split_groups
    from trainers.preference import encode_groups, load_split, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    if cfg.candidates is not None:
        data_groups = groups if groups is not None else (load_preferences(cfg.data) if cfg.data else [])
        made = make_candidate_groups(cfg.candidates, cfg.model, data_groups, tokenizer, cfg.seed)
        if eval_groups is not None or cfg.eval_data:
            train_g, eval_g = made, eval_groups if eval_groups is not None else load_preferences(cfg.eval_data)
        else:
            train_g, eval_g = split_groups(made, cfg.eval_fraction, cfg.seed)
    else:
        if cfg.data is None and groups is None:
            raise FlanmixError("rrhf needs data (rankings or pairs) or candidates", field="data")
        train_g, eval_g = load_split(groups if groups is not None else cfg.data,
                                     eval_groups if eval_groups is not None else cfg.eval_data,
                                     cfg.eval_fraction, cfg.seed)
    model = load_policy(cfg.model)
    return RRHFStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length),
                     encode_groups(tokenizer, eval_g, cfg.max_length), sft_weight=cfg.sft_weight,
                     prefix_sharing=cfg.prefix_sharing)


def train(config: RRHFConfig | dict | str | Path, **overrides: Any):
    """Train a policy with RRHF; returns the loop's TrainResult (final model in <output_dir>/final)."""
    from trainers import loop
    from trainers.preference import parse_config, write_run_info

    cfg = parse_config(config, overrides, RRHFConfig)
    stage = build_stage(cfg)
    write_run_info(cfg, "rrhf", {"train_groups": len(stage._train), "eval_groups": len(stage._eval or [])})
    return loop.train(stage, cfg.loop_config())
