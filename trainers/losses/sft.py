"""Supervised fine-tuning: the mean negative log-likelihood of the completion tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainers.data import IGNORE


def completion_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L = − (1/N) Σ_t log p(y_t | x, y_<t), over the N positions whose target is not IGNORE (-100).

    `logits` [M, V] and `targets` [M] are aligned (targets already shifted); positions with IGNORE targets add
    nothing, so the loss of a packed or padded batch is the mean over its trained tokens.
    """
    n = (targets != IGNORE).sum()
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum") / n.clamp_min(1)
