"""DPO (Rafailov et al. 2023) and its IPO and hinge (SLiC) variants.

With h = [log πθ(y_w|x) − log π_ref(y_w|x)] − [log πθ(y_l|x) − log π_ref(y_l|x)] (sums over completion tokens):

    sigmoid:  L = − log σ(β h)                    (DPO, eq. 7)
    ipo:      L = (h − 1/(2β))²                   (IPO, Azar et al. 2023, eq. 17; sequence sums as in the paper)
    hinge:    L = max(0, 1 − β h)                 (SLiC-HF, Zhao et al. 2023)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flanmix.core.errors import FlanmixError

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid") -> tuple[torch.Tensor, dict]:
    """Per-pair losses averaged over pairs, and the usual reward metrics (means over pairs); the implicit reward
    of a response is β (log πθ − log π_ref)."""
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
