"""The training objectives, one small module per method, each function written like its paper's equation.

They take tensors (log-probabilities, rewards, values) and return `(loss, metrics)`; the stage modules compute those
tensors with their models and call these. `sft`: next-token NLL; `reward`: Bradley-Terry pairs/rankings
(InstructGPT); `dpo`: DPO / IPO / SLiC hinge; `rrhf`: ranking hinge + SFT; `ppo`: GAE, clipped policy and value
losses, KL-shaped rewards.
"""
