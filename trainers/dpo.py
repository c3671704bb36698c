"""DPO stage (Rafailov et al. 2023), with the IPO and hinge (SLiC) variants (equations: `trainers.losses.dpo`).

The reference is either a frozen copy of the initial policy or its log-probs computed once before training
(`reference: precomputed`, the default): the same numbers, one model in memory and one forward per step instead of
two. With a LoRA adapter (`peft:`), the frozen copy is the policy itself with its adapter switched off
(`trainers.adapters.frozen_base`): no second model in memory in either mode. Chosen and rejected go through the
policy in one concatenated forward (the collator orders a batch of pairs ``[chosen…, rejected…]``; rankings
contribute all their (better, worse) pairs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from flanmix.core.errors import FlanmixError
from trainers import loop
from trainers.adapters import frozen_base, has_adapter, is_quantized, wrap
from trainers.config import AdapterField, LoopSettings, parse_config, write_run_info
from trainers.logprobs import batch_sequence_logprobs, precompute_sequence_logprobs
from trainers.losses.dpo import LOSS_TYPES, dpo_loss
from trainers.models import check_same_tokenizer, is_encoder_decoder, load_tokenizer
from trainers.policy import PolicyPreferenceStage, load_policy
from trainers.preference import collate, encode_groups, load_split, pad_id_of, sequence_order
from trainers.protocol import TrainResult


def completion_lengths(batch: dict) -> torch.Tensor:
    """Completion tokens (EOS included) of every sequence of a padded or prefix-shared preference batch."""
    if "tok_seq" in batch:
        return torch.bincount(batch["tok_seq"], minlength=batch["group"].shape[0])
    return batch["loss_mask"].sum(-1)


def batch_dpo_loss(model, batch: dict, beta: float, loss_type: str = "sigmoid",
                   ref_model=None, nll_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """DPO on a collated preference batch: one policy forward over all sequences; the reference comes from
    ``batch['ref_logps']`` (precomputed) or from `ref_model` (a frozen copy). `nll_weight` adds RPO's NLL term on
    the chosen responses (`trainers.losses.dpo`)."""
    if "ref_logps" in batch and ref_model is None:
        ref = batch["ref_logps"]
    elif ref_model is not None:
        # before the policy's forward: the reference pass's transient memory is gone before the policy's
        # activations (kept for the backward) build up, instead of stacking on top of them
        with torch.no_grad():
            ref = batch_sequence_logprobs(ref_model, batch)
    else:
        raise FlanmixError("DPO needs reference log-probs: a reference model or precomputed log-probs",
                           field="reference")
    logps = batch_sequence_logprobs(model, batch)
    ref = ref.to(logps.device, logps.dtype)
    c, r = batch["pair_chosen"], batch["pair_rejected"]
    lengths = completion_lengths(batch)[c] if nll_weight else None
    return dpo_loss(logps[c], logps[r], ref[c], ref[r], beta, loss_type, nll_weight=nll_weight,
                    chosen_lengths=lengths)


def attach_reference_logprobs(model, encoded_groups, pad_id: int, batch_size: int = 16) -> None:
    """Compute the (frozen) model's sequence log-probs once and store them on every group as `ref_logps`."""
    device = next(model.parameters()).device
    for i in range(0, len(encoded_groups), batch_size):
        chunk = encoded_groups[i: i + batch_size]
        b = collate(chunk, pad_id)
        b = {k: v.to(device) for k, v in b.items()}
        lp = precompute_sequence_logprobs(model, [b])
        for g in chunk:
            g.ref_logps = [0.0] * len(g.responses_ids)
        for n, (gi, r) in enumerate(sequence_order(chunk)):  # the collator's order, back to (group, response)
            chunk[gi].ref_logps[r] = float(lp[n])


class DPOStage(PolicyPreferenceStage):
    """The DPO stage (see trainers.protocol)."""

    name = "dpo"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, *, beta: float = 0.1,
                 loss_type: str = "sigmoid", reference: str = "precomputed", ref_model=None,
                 prefix_sharing: bool = True, nll_weight: float = 0.0):
        if loss_type not in LOSS_TYPES:
            raise FlanmixError(f"unknown DPO loss type {loss_type!r}", field="loss_type",
                               expected=" | ".join(LOSS_TYPES))
        if reference not in ("precomputed", "copy"):
            raise FlanmixError(f"unknown reference mode {reference!r}", field="reference",
                               expected="precomputed | copy")
        self.model, self.tokenizer = model, tokenizer
        self.pad_id = pad_id_of(tokenizer)
        self.prefix_sharing = prefix_sharing
        self.beta, self.loss_type, self.reference = beta, loss_type, reference
        self.nll_weight = nll_weight
        self.train_groups, self.eval_groups = train_groups, eval_groups or None
        self.ref_model = None
        # LoRA without a separate reference: the policy with its adapter off is the reference
        self.adapter_reference = ref_model is None and has_adapter(model)
        if reference == "copy" and not self.adapter_reference:
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.requires_grad_(False).eval()
        elif reference == "precomputed":
            # Computed here, from the initial weights, so a resumed run gets the same reference.
            src = ref_model if ref_model is not None else model
            device = next(src.parameters()).device
            move = torch.cuda.is_available() and not is_quantized(src)  # 4-bit weights are placed at load time
            if move:
                src.to("cuda")
            with frozen_base(src):
                for groups in (self.train_groups, self.eval_groups or []):
                    attach_reference_logprobs(src, groups, self.pad_id)
            if move:
                src.to(device)
            self.adapter_reference = False

    def setup(self, ctx) -> None:
        if self.ref_model is not None:
            self.ref_model.to(ctx.device)

    def count(self, batch) -> int:
        return int(batch["pair_chosen"].numel())

    def loss(self, model, batch):
        if self.adapter_reference:
            with frozen_base(self.model):  # the stage's (unwrapped) policy, adapter off
                batch = {**batch, "ref_logps": batch_sequence_logprobs(self.model, batch)}
        return batch_dpo_loss(model, batch, self.beta, self.loss_type, self.ref_model, self.nll_weight)


class DPOConfig(LoopSettings, AdapterField):
    """`flanmix train dpo --config dpo.yaml`: loop settings plus these."""

    model: str                    # the policy to start from (usually the SFT output)
    reference: str | None = None  # reference model folder; default: the initial policy
    reference_mode: Literal["precomputed", "copy"] = "precomputed"
    data: str
    eval_data: str | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    nll_weight: float = Field(0.0, ge=0)  # RPO: + weight * per-token NLL of the chosen response (0: plain DPO)
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True   # encode each prompt once per pair (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def build_stage(cfg: DPOConfig, groups=None, eval_groups=None) -> DPOStage:
    """Tokenizer, data, the policy and (when `reference` names another folder) the reference model."""
    tokenizer = load_tokenizer(cfg.model)
    train_g, eval_g = load_split(groups if groups is not None else cfg.data,
                                 eval_groups if eval_groups is not None else cfg.eval_data,
                                 cfg.eval_fraction, cfg.seed)
    model = load_policy(cfg.model, cfg.peft)
    if cfg.peft is not None:
        model = wrap(model, cfg.peft, base_path=cfg.model)
    ref = None
    if cfg.reference and Path(cfg.reference).resolve() != Path(cfg.model).resolve():
        ref = load_policy(cfg.reference)
        check_same_tokenizer(tokenizer, load_tokenizer(cfg.reference), cfg.reference)
    s2s = is_encoder_decoder(model)  # T5: prompts to the encoder, responses to the decoder
    return DPOStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length, encoder_decoder=s2s),
                    encode_groups(tokenizer, eval_g, cfg.max_length, encoder_decoder=s2s), beta=cfg.beta,
                    loss_type=cfg.loss_type,
                    reference=cfg.reference_mode, ref_model=ref, prefix_sharing=cfg.prefix_sharing,
                    nll_weight=cfg.nll_weight)


def train(config: DPOConfig | dict | str | Path, **overrides: Any) -> TrainResult:
    """Train a policy with DPO; returns the loop's TrainResult (final model in <output_dir>/final)."""
    cfg = parse_config(config, DPOConfig, overrides)
    stage = build_stage(cfg)
    write_run_info(cfg, "dpo", {"train_groups": len(stage.train_groups), "eval_groups": len(stage.eval_groups or [])})
    return loop.train(stage, cfg)
