"""DPO (Rafailov et al. 2023) and its IPO and hinge (SLiC) variants.

With h = [log πθ(y_w|x) − log π_ref(y_w|x)] − [log πθ(y_l|x) − log π_ref(y_l|x)] (sums over completion tokens):

    sigmoid:  L = − log σ(β h)                    (DPO, eq. 7)
    ipo:      L = (h − 1/(2β))²                   (IPO, Azar et al. 2023, eq. 17; sequence sums as in the paper)
    hinge:    L = max(0, 1 − β h)                 (SLiC-HF, Zhao et al. 2023)

Optionally plus an NLL term on the chosen response (RPO, Pang et al. 2024, "Iterative Reasoning Preference
Optimization", eq. 1; TRL's `rpo_alpha`), the field's remedy for DPO lowering the likelihood of the chosen answers:

    L_RPO = L + α · [ −log πθ(y_w|x) / |y_w| ]      (|y_w|: completion tokens of y_w, EOS included)

averaged over pairs like L. With α = 0 the term is not computed at all, so the loss is plain DPO bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flanmix.core.errors import FlanmixError

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid", *, nll_weight: float = 0.0,
             chosen_lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Per-pair losses averaged over pairs, and the usual reward metrics (means over pairs); the implicit reward
    of a response is β (log πθ − log π_ref). With `nll_weight` α > 0, plus α times the mean per-token NLL of the
    chosen responses (`chosen_lengths`: their completion token counts)."""
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
    loss = losses.mean()
    if nll_weight:
        if chosen_lengths is None:
            raise FlanmixError("the NLL term needs the chosen responses' lengths", field="nll_weight")
        nll = (-policy_chosen / chosen_lengths.to(policy_chosen.dtype).clamp(min=1.0)).mean()
        loss = loss + nll_weight * nll
        metrics["nll/chosen"] = nll.detach().item()
    return loss, metrics
