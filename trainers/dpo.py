"""DPO stage (Rafailov et al. 2023), with the IPO and hinge (SLiC) variants.

With h = [log πθ(y_w|x) − log π_ref(y_w|x)] − [log πθ(y_l|x) − log π_ref(y_l|x)] (sums over completion tokens):

    sigmoid:  L = − log σ(β h)                    (DPO, eq. 7)
    ipo:      L = (h − 1/(2β))²                   (IPO, Azar et al. 2023, eq. 17; sequence sums as in the paper)
    hinge:    L = max(0, 1 − β h)                 (SLiC-HF, Zhao et al. 2023)

The reference is either a frozen copy of the initial policy or its log-probs computed once before training
(`reference: precomputed`, the default): the same numbers, one model in memory and one forward per step instead of
two. Chosen and rejected go through the policy in one concatenated forward (the collator orders a batch of pairs
``[chosen…, rejected…]``; rankings contribute all their (better, worse) pairs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from flanmix.core.errors import FlanmixError
from trainers.config import LoopSettings
from trainers.preference import GroupDataStage
from trainers.logprobs import batch_sequence_logprobs, precompute_sequence_logprobs, sequence_logprobs

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict]:
    """Per-pair losses averaged over pairs, and the usual reward metrics (means over pairs)."""
    chosen_logratio = policy_chosen - ref_chosen
    rejected_logratio = policy_rejected - ref_rejected
    h = chosen_logratio - rejected_logratio
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1.0 - beta * h)
    else:
        raise FlanmixError(f"unknown DPO loss type {loss_type!r}", field="loss_type", expected=" | ".join(LOSS_TYPES))
    with torch.no_grad():
        r_c, r_r = beta * chosen_logratio.detach(), beta * rejected_logratio.detach()
        metrics = {
            "rewards/chosen": r_c.mean().item(),
            "rewards/rejected": r_r.mean().item(),
            "rewards/margins": (r_c - r_r).mean().item(),
            "rewards/accuracies": (r_c > r_r).float().mean().item(),
            "logps/chosen": policy_chosen.detach().mean().item(),
            "logps/rejected": policy_rejected.detach().mean().item(),
        }
    return losses.mean(), metrics


def batch_dpo_loss(model, batch: dict, beta: float, loss_type: str = "sigmoid",
                   ref_model=None) -> tuple[torch.Tensor, dict]:
    """DPO on a collated preference batch: one policy forward over all sequences; the reference comes from
    ``batch['ref_logps']`` (precomputed) or from `ref_model` (a frozen copy)."""
    logps = batch_sequence_logprobs(model, batch)
    if "ref_logps" in batch and ref_model is None:
        ref = batch["ref_logps"].to(logps.device, logps.dtype)
    elif ref_model is not None:
        with torch.no_grad():
            ref = batch_sequence_logprobs(ref_model, batch)
    else:
        raise FlanmixError("DPO needs reference log-probs: a reference model or precomputed log-probs",
                           field="reference")
    c, r = batch["pair_chosen"], batch["pair_rejected"]
    return dpo_loss(logps[c], logps[r], ref[c], ref[r], beta, loss_type)


@torch.no_grad()
def preference_accuracy(model, encoded_groups, pad_id: int, batch_size: int = 32, average: bool = True) -> float:
    """Fraction of held-out (better, worse) pairs where the policy gives the better response the higher
    (length-normalised by default) log-probability."""
    from trainers.preference import collate

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for i in range(0, len(encoded_groups), batch_size):
        b = collate(encoded_groups[i: i + batch_size], pad_id)
        lp = sequence_logprobs(model, b["input_ids"].to(device), b["attention_mask"].to(device),
                               b["loss_mask"].to(device), average=average).cpu()
        d = lp[b["pair_chosen"]] - lp[b["pair_rejected"]]
        correct += int((d > 0).sum())
        total += d.numel()
    model.train(was)
    return correct / max(total, 1)


def attach_reference_logprobs(model, encoded_groups, pad_id: int, batch_size: int = 16) -> None:
    """Compute the (frozen) model's sequence log-probs once and store them on every group as `ref_logps`."""
    from trainers.preference import collate

    device = next(model.parameters()).device
    for i in range(0, len(encoded_groups), batch_size):
        chunk = encoded_groups[i: i + batch_size]
        b = collate(chunk, pad_id)
        b = {k: v.to(device) for k, v in b.items()}
        lp = precompute_sequence_logprobs(model, [b])
        # collate orders sequences response-major; map them back to (group, response)
        order = [(gi, r) for r in range(max(len(g.responses_ids) for g in chunk))
                 for gi, g in enumerate(chunk) if r < len(g.responses_ids)]
        for g in chunk:
            g.ref_logps = [0.0] * len(g.responses_ids)
        for n, (gi, r) in enumerate(order):
            chunk[gi].ref_logps[r] = float(lp[n])


class PolicyPreferenceStage(GroupDataStage):
    """What the DPO and RRHF stages share: a policy whose held-out metric is how often it prefers the chosen
    (higher-scored) response, saved as a plain transformers folder."""

    def evaluate(self, ctx) -> dict:
        if not self._eval:
            return {}
        model = ctx.unwrapped if ctx is not None else self.model
        return {"eval_preference_accuracy": preference_accuracy(model, self._eval, self.pad_id)}

    def save(self, ctx, out_dir: Path) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model) if ctx is not None else self.model
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


class DPOStage(PolicyPreferenceStage):
    """Stage protocol object for `trainers.loop.train` (see trainers/loop.py)."""

    name = "dpo"

    def __init__(self, model, tokenizer, train_groups, eval_groups=None, *, beta: float = 0.1,
                 loss_type: str = "sigmoid", reference: str = "precomputed", ref_model=None,
                 prefix_sharing: bool = True):
        from trainers.preference import pad_id_of

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
        self._train, self._eval = train_groups, eval_groups or None
        self.ref_model = None
        if reference == "copy":
            self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
            self.ref_model.requires_grad_(False).eval()
        else:
            # Computed here, from the initial weights, so a resumed run gets the same reference.
            src = ref_model if ref_model is not None else model
            device = next(src.parameters()).device
            if torch.cuda.is_available():
                src.to("cuda")
            for groups in (self._train, self._eval or []):
                attach_reference_logprobs(src, groups, self.pad_id)
            src.to(device)

    def setup(self, ctx) -> None:
        if self.ref_model is not None:
            self.ref_model.to(ctx.device)

    def count(self, batch) -> int:
        return int(batch["pair_chosen"].numel())

    def loss(self, model, batch):
        return batch_dpo_loss(model, batch, self.beta, self.loss_type, self.ref_model)



def load_policy(path: str | Path):
    """A causal LM from a local folder (clear errors for missing/broken folders)."""
    from trainers.models import load_causal_lm

    return load_causal_lm(path)


class DPOConfig(LoopSettings):
    """`flanmix train dpo --config dpo.yaml`: loop settings plus these."""

    model: str                                          # the policy to start from (usually the SFT output)
    reference: Optional[str] = None                     # reference model folder; default: the initial policy
    reference_mode: Literal["precomputed", "copy"] = "precomputed"
    data: str
    eval_data: Optional[str] = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    max_length: int = Field(256, ge=4)
    prefix_sharing: bool = True                         # encode each prompt once per pair (see collate_shared)
    lr: float = Field(1e-4, gt=0)


def build_stage(cfg: DPOConfig, groups=None, eval_groups=None) -> DPOStage:
    from trainers.preference import encode_groups, load_split, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    train_g, eval_g = load_split(groups if groups is not None else cfg.data,
                                 eval_groups if eval_groups is not None else cfg.eval_data,
                                 cfg.eval_fraction, cfg.seed)
    model = load_policy(cfg.model)
    ref = None
    if cfg.reference and Path(cfg.reference).resolve() != Path(cfg.model).resolve():
        ref = load_policy(cfg.reference)
        from trainers.ppo import check_same_tokenizer

        check_same_tokenizer(tokenizer, load_tokenizer(cfg.reference), cfg.reference)
    return DPOStage(model, tokenizer, encode_groups(tokenizer, train_g, cfg.max_length),
                    encode_groups(tokenizer, eval_g, cfg.max_length), beta=cfg.beta, loss_type=cfg.loss_type,
                    reference=cfg.reference_mode, ref_model=ref, prefix_sharing=cfg.prefix_sharing)


def train(config: DPOConfig | dict | str | Path, **overrides: Any):
    """Train a policy with DPO; returns the loop's TrainResult (final model in <output_dir>/final)."""
    from trainers import loop
    from trainers.preference import parse_config, write_run_info

    cfg = parse_config(config, overrides, DPOConfig)
    stage = build_stage(cfg)
    write_run_info(cfg, "dpo", {"train_groups": len(stage._train), "eval_groups": len(stage._eval or [])})
    return loop.train(stage, cfg.loop_config())
