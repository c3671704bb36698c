"""RRHF (Yuan et al. 2023): rank responses by length-normalised log-probability, plus SFT on the best.

For a prompt x with k responses y_1..y_k and their scores r_1..r_k (reward model, programmatic, or given):

    p_i     = (1/|y_i|) Σ_t log π(y_{i,t} | x, y_{i,<t})                  (eq. 1, length-normalised)
    L_rank  = Σ_{r_i < r_j} max(0, p_i − p_j)                            (eq. 2)
    L_ft    = − (1/|y_best|) Σ_t log π(y_{best,t} | x, y_{best,<t})       (eq. 3, y_best = argmax_i r_i)
    L       = L_rank + λ · L_ft                                            (eq. 4)

Ties (r_i == r_j) give no rank term. The loss is computed per prompt and averaged over the prompts of the batch,
so any batch size works (the k responses of a prompt are grouped by the collator).
"""

from __future__ import annotations

import torch


def rrhf_loss_from_scores(p: torch.Tensor, batch: dict, sft_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """RRHF loss (eq. 4, λ = sft_weight) given the length-normalised log-probs `p` [N] of a collated batch's
    sequences (`group`, `scores`, `pair_chosen` = better, `pair_rejected` = worse; see trainers.preference)."""
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
