"""RRHF stage (Yuan et al. 2023): rank responses by length-normalised log-probability, plus SFT on the best
(equations: `trainers.losses.rrhf`).

The responses come from the data (rankings or pairs) or are made on the fly (`candidates`): k samples per prompt
from a model, scored by a reward model or a reward function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from flanmix.core.errors import FlanmixError
from flanmix.core.strict import StrictMutable
from flanmix.preferences import Group, load_preferences, response_text, split_groups
from trainers import loop
from trainers.adapters import wrap
from trainers.config import AdapterField, LoopSettings, parse_config, write_run_info
from trainers.data import prompt_ids, response_ids, strip_template_bos
from trainers.logprobs import batch_sequence_logprobs
from trainers.losses.rrhf import rrhf_loss_from_scores
from trainers.models import check_same_tokenizer, is_encoder_decoder, load_tokenizer
from trainers.policy import PolicyPreferenceStage, load_policy
from trainers.preference import (
    EncodedGroup,
    check_completion,
    collate,
    encode_groups,
    load_split,
    pad_id_of,
    read_prompts,
    render_prompt,
)
from trainers.protocol import TrainResult
from trainers.rewards import load_reward_fn, load_reward_model, reward_scores


def rrhf_loss(model, batch: dict, sft_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """RRHF on a collated batch: length-normalised sequence log-probs, then the ranking + SFT loss."""
    p = batch_sequence_logprobs(model, batch, average=True)
    return rrhf_loss_from_scores(p, batch, sft_weight)


class RRHFStage(PolicyPreferenceStage):
    """The RRHF stage (see trainers.protocol)."""

    name = "rrhf"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, *, sft_weight: float = 1.0,
                 prefix_sharing: bool = True):
        self.prefix_sharing = prefix_sharing
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.sft_weight = sft_weight
        self.train_groups, self.eval_groups = train_groups, eval_groups or None

    def count(self, batch) -> int:
        return int(batch["group"].max().item()) + 1

    def loss(self, model, batch):
        return rrhf_loss(model, batch, self.sft_weight)


@torch.no_grad()
def sample_candidates(model, tokenizer, prompts: list, k: int, max_new_tokens: int = 32,
                      temperature: float = 1.0, seed: int = 0, batch_size: int = 16) -> list[list[str]]:
    """k sampled completions per prompt from a causal LM (the SFT model in a pipeline)."""
    torch.manual_seed(seed)
    was = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    try:
        for i in range(0, len(prompts), batch_size):
            # the tokenizer adds BOS itself: a chat template's BOS text would make it twice
            texts = [strip_template_bos(tokenizer, render_prompt(tokenizer, p))[0] for p in prompts[i: i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True)
            gen = model.generate(**enc, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                 max_new_tokens=max_new_tokens, num_return_sequences=k,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            comp = gen if is_encoder_decoder(model) else gen[:, enc["input_ids"].shape[1]:]
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
    rm_model.eval()
    out = []
    for prompt, cands in zip(prompts, candidates):
        comps = [check_completion(response_ids(tokenizer, prompt, c if c.strip() else " "))[:max_length]
                 for c in cands]  # the ids encode_group gives a (prompt, response) pair
        g = EncodedGroup(prompt_ids(tokenizer, prompt), comps, [0.0] * len(cands))
        b = collate([g], pad_id_of(tokenizer))
        with torch.no_grad():
            r = reward_scores(rm_model, b["input_ids"], b["attention_mask"])
        out.append([float(x) for x in r])
    return out


class CandidateSpec(StrictMutable):
    """RRHF candidates made on the fly: k samples per prompt from a model, scored by a reward model/function."""

    prompts: str | None = None       # prompt rows (JSONL with prompt); default: the prompts of `data`
    sample_from: str | None = None   # model folder to sample from; default: the stage's model
    k: int = Field(4, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, gt=0)
    reward_model: str | None = None  # a reward-model folder (the rm stage's output) ...
    reward_fn: str | None = None     # ... or 'module:function'(prompts, completions, rows) -> scores
    include_data: bool = True        # also rank the responses given in `data` (ground truth)
    max_prompts: int | None = Field(None, ge=1)


class RRHFConfig(LoopSettings, AdapterField):
    """`flanmix train rrhf --config rrhf.yaml`: loop settings plus these."""

    model: str
    data: str | None = None      # rankings / pairs; or prompts when `candidates` makes responses
    candidates: CandidateSpec | None = None
    eval_data: str | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    sft_weight: float = Field(1.0, ge=0)
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True  # encode each prompt once per group (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def candidate_prompts(spec: CandidateSpec, data_groups) -> tuple[list[Group], list[dict]]:
    """The groups to make candidates for, and their prompt rows (for a reward function)."""
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
    return base, rows


def make_candidate_groups(spec: CandidateSpec, model_path: str, data_groups, tokenizer, seed: int = 0):
    """Groups of sampled (+ given) responses with reward scores; groups whose scores all tie are dropped."""
    if (spec.reward_model is None) == (spec.reward_fn is None):
        raise FlanmixError("candidates need exactly one of reward_model and reward_fn", field="candidates")
    base, rows = candidate_prompts(spec, data_groups)
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
    """Tokenizer, the groups to rank (given, or made by `candidates`) and the policy."""
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
    model = load_policy(cfg.model, cfg.peft)
    if cfg.peft is not None:
        model = wrap(model, cfg.peft, base_path=cfg.model)
    s2s = is_encoder_decoder(model)  # T5: prompts to the encoder, responses to the decoder
    return RRHFStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length, encoder_decoder=s2s),
                     encode_groups(tokenizer, eval_g, cfg.max_length, encoder_decoder=s2s), sft_weight=cfg.sft_weight,
                     prefix_sharing=cfg.prefix_sharing)


def train(config: RRHFConfig | dict | str | Path, **overrides: Any) -> TrainResult:
    """Train a policy with RRHF; returns the loop's TrainResult (final model in <output_dir>/final)."""
    cfg = parse_config(config, RRHFConfig, overrides)
    stage = build_stage(cfg)
    write_run_info(cfg, "rrhf", {"train_groups": len(stage.train_groups), "eval_groups": len(stage.eval_groups or [])})
    return loop.train(stage, cfg)
