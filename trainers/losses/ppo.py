"""PPO for language models (InstructGPT-style RLHF): per-token rewards, advantages and the clipped losses.

    r_t = −β · (log π_old(a_t) − log π_ref(a_t))  +  [t = last] · score              (KL-shaped reward)
    δ_t = r_t + γ V(s_{t+1}) − V(s_t),   Â_t = δ_t + γλ Â_{t+1},   R_t = Â_t + V(s_t)   (GAE)
    L_pg = E_t[ max(−Â_t ρ_t, −Â_t clip(ρ_t, 1−ε, 1+ε)) ],   ρ_t = π(a_t) / π_old(a_t)  (PPO, eq. 7)
    L_v  = ½ E_t[ max((V_t − R_t)², (V_old,t + clip(V_t − V_old,t, −ε_v, ε_v) − R_t)²) ]

Tensors are [N, L] grids with a `mask` marking each row's contiguous action span; means are over masked entries.
"""

from __future__ import annotations

import torch

from trainers.logprobs import masked_mean


def kl_shaped_rewards(old_logps: torch.Tensor, ref_logps: torch.Tensor, score: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = −β·KL_t + [t = last action]·score, and the per-token KL estimate KL_t."""
    kl = (old_logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask * torch.arange(mask.shape[1])).argmax(-1)
    rewards[torch.arange(mask.shape[0]), last] += score
    return rewards, kl


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
                lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation on a [N, L] grid where `mask` marks each row's contiguous action span.

    Positions outside the span get zero advantage; the step after the last action is terminal (V = 0).
    Returns (advantages, returns = advantages + values).
    """
    mask = mask.to(values.dtype)
    N, L = rewards.shape
    adv = torch.zeros_like(values)
    last = torch.zeros(N, dtype=values.dtype, device=values.device)
    next_v = torch.zeros(N, dtype=values.dtype, device=values.device)
    next_m = torch.zeros(N, dtype=values.dtype, device=values.device)
    for t in reversed(range(L)):
        delta = rewards[:, t] + gamma * next_v * next_m - values[:, t]
        last = (delta + gamma * lam * last * next_m) * mask[:, t]
        adv[:, t] = last
        next_v, next_m = values[:, t], mask[:, t]
    return adv, (adv + values) * mask


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate objective (PPO eq. 7), as a loss to minimise; masked mean over action tokens."""
    ratio = torch.exp(logps - old_logps)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg2 > pg1).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * (logps - old_logps) ** 2, mask).item(),
            "ratio": masked_mean(ratio, mask).item(),
        }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, dict]:
    """½ max((V − R)², (V_clipped − R)²), masked mean; V_clipped stays within ±clip of the rollout values."""
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean(((v_clipped - returns) ** 2 > (values - returns) ** 2).float(),
                                            mask).item()}
    return loss, stats
