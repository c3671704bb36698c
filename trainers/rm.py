"""Reward model stage: a causal-LM backbone with a scalar head, trained on pairs and k-way rankings.

The loss is InstructGPT's (eq. 1, with Llama 2's optional margin; `trainers.losses.reward`):

    loss(θ) = − 1/|P_x| Σ_{(y_w, y_l) ∈ P_x} log σ( r_θ(x, y_w) − r_θ(x, y_l) − m )

The score r_θ(x, y) is the head at the last non-pad token (`trainers.rewards`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from trainers import loop
from trainers.adapters import wrap
from trainers.config import AdapterField, LoopSettings, parse_config, write_run_info
from trainers.losses.reward import pairwise_loss
from trainers.models import load_tokenizer, require_decoder_only
from trainers.preference import GroupDataStage, collate, encode_groups, load_split, pad_id_of
from trainers.protocol import TrainResult
from trainers.rewards import batch_reward_scores, new_reward_model, reward_scores


def rm_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """The pairwise loss of a collated batch (padded or prefix-shared)."""
    return pairwise_loss(batch_reward_scores(model, batch), batch)


@torch.no_grad()
def evaluate_rm(model, encoded_groups, pad_id: int, batch_size: int = 32) -> dict:
    """Pairwise accuracy and mean margin of a reward model over held-out groups (all pairs counted equally)."""
    was = model.training
    model.eval()
    correct = total = 0
    margin_sum = 0.0
    device = next(model.parameters()).device
    for i in range(0, len(encoded_groups), batch_size):
        batch = collate(encoded_groups[i: i + batch_size], pad_id)
        r = reward_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu()
        d = r[batch["pair_chosen"]] - r[batch["pair_rejected"]]
        correct += int((d > 0).sum())
        total += d.numel()
        margin_sum += float(d.sum())
    model.train(was)
    return {"accuracy": correct / max(total, 1), "margin": margin_sum / max(total, 1), "pairs": total}


class RewardStage(GroupDataStage):
    """The reward-model stage (see trainers.protocol)."""

    name = "rm"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, prefix_sharing: bool = True):
        self.prefix_sharing = prefix_sharing
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.train_groups = train_groups
        self.eval_groups = eval_groups or None

    def count(self, batch) -> int:
        return int(torch.unique(batch["pair_group"]).numel())

    def loss(self, model, batch):
        return rm_loss(model, batch)

    def evaluate(self, ctx) -> dict:
        if not self.eval_groups:
            return {}
        model = ctx.unwrapped if ctx is not None else self.model
        res = evaluate_rm(model, self.eval_groups, self.pad_id)
        return {"eval_accuracy": res["accuracy"], "eval_margin": res["margin"]}

    def save(self, ctx, out_dir: Path) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model) if ctx is not None else self.model
        model.config.pad_token_id = self.pad_id
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


class RMConfig(LoopSettings, AdapterField):
    """`flanmix train rm --config rm.yaml`: loop settings plus these."""

    model: str                    # causal-LM (e.g. the SFT output) or reward-model folder
    data: str                     # pairs / rankings JSONL (or an HH-RLHF/PandaLM/ShareGPT file)
    eval_data: str | None = None  # held-out set; default: eval_fraction of data
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True   # encode each prompt once per group (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def build_stage(cfg: RMConfig, groups=None, eval_groups=None) -> RewardStage:
    """Tokenizer, data and a scalar-head model initialised from cfg.model."""
    require_decoder_only(cfg.model, "rm")
    tokenizer = load_tokenizer(cfg.model)
    train_g, eval_g = load_split(groups if groups is not None else cfg.data,
                                 eval_groups if eval_groups is not None else cfg.eval_data,
                                 cfg.eval_fraction, cfg.seed)
    model = new_reward_model(cfg.model, seed=cfg.seed, peft=cfg.peft)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.peft is not None:  # the score head trains in full alongside the adapter
        model = wrap(model, cfg.peft, base_path=cfg.model, scalar=True)
    return RewardStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length),
                       encode_groups(tokenizer, eval_g, cfg.max_length), prefix_sharing=cfg.prefix_sharing)


def train(config: RMConfig | dict | str | Path, **overrides: Any) -> TrainResult:
    """Train a reward model; returns the loop's TrainResult (final model in <output_dir>/final)."""
    cfg = parse_config(config, RMConfig, overrides)
    stage = build_stage(cfg)
    write_run_info(cfg, "rm", {"train_groups": len(stage.train_groups), "eval_groups": len(stage.eval_groups or [])})
    return loop.train(stage, cfg)
