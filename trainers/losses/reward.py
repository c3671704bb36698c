"""Reward model loss (InstructGPT, eq. 1; with the optional margin of Llama 2):

    loss(θ) = − 1/|P_x| Σ_{(y_w, y_l) ∈ P_x} log σ( r_θ(x, y_w) − r_θ(x, y_l) − m )

P_x are all (better, worse) pairs of the k responses to prompt x; the batch loss is the mean over prompts. A pair
row is k = 2, one pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_mean(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean over groups of the per-group mean of `values` (indexed by `group`); returns (mean, n_groups)."""
    if values.numel() == 0:
        return values.sum(), 0
    uniq, inv = torch.unique(group, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add(0, inv, values)
    counts = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add(
        0, inv, torch.ones_like(values))
    return (sums / counts).mean(), len(uniq)


def pairwise_loss(rewards: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """−log σ(r_w − r_l − m), averaged per prompt then over prompts; metrics accuracy and mean margin.

    `rewards` [N] are the scores of a collated batch's sequences; the batch names the pairs (`pair_chosen`,
    `pair_rejected`, `pair_group`, `pair_margin`, see trainers.preference.collate)."""
    r_w = rewards[batch["pair_chosen"]]
    r_l = rewards[batch["pair_rejected"]]
    diff = r_w - r_l
    per_pair = -F.logsigmoid(diff - batch["pair_margin"].to(diff.dtype))
    loss, _ = group_mean(per_pair, batch["pair_group"])
    with torch.no_grad():
        metrics = {
            "accuracy": (diff > 0).float().mean().item(),
            "margin": diff.mean().item(),
            "reward_mean": rewards.mean().item(),
        }
    return loss, metrics
