"""Measuring a policy on the held-out prompts: true reward and sequence KL to the SFT model (one frontier point),
and its win rate against the SFT model at several sampling temperatures.

Every model is sampled with the same seeds (common random numbers), so differences between runs are not sampling
noise of the evaluation itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from flanmix.core.errors import FlanmixError
from flanmix.study.frontier.data import RewardFn
from flanmix.study.frontier.sampling import Mean, policy_samples, sample
from flanmix.study.frontier.spec import EvalSettings
from trainers.data import adds_bos, prompt_ids
from trainers.policy import load_policy
from trainers.preference import render_prompt

#: seed offsets of the evaluation samples (KL/reward points; win rates add the temperature's index)
POINT_SEED, WIN_SEED = 7_000, 9_000


def decode(tokenizer, responses: Sequence[Sequence[int]]) -> list[str]:
    """Response text: the tokens before EOS, special tokens dropped."""
    eos = tokenizer.eos_token_id
    return [tokenizer.decode([t for t in r if t != eos], skip_special_tokens=True) for r in responses]


@dataclass
class Evaluator:
    """Held-out prompts, the SFT model and the true reward; `point` and `win_rates` measure a policy."""

    tokenizer: object
    sft: torch.nn.Module
    prompts: list[dict]
    reward: RewardFn
    settings: EvalSettings
    seed: int = 0
    prompt_ids: list[list[int]] = field(init=False)
    _sft_rewards: dict[float, list[float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        bos = adds_bos(self.tokenizer)
        self.prompt_ids = [prompt_ids(self.tokenizer, render_prompt(self.tokenizer, p["prompt"]), bos=bos)
                           for p in self.prompts]
        self.sft.requires_grad_(False).eval()

    def scores(self, responses: Sequence[Sequence[int]], n: int) -> list[float]:
        """The true reward of responses sampled `n` per prompt (prompt-major)."""
        rows = [p for p in self.prompts for _ in range(n)]
        texts = decode(self.tokenizer, responses)
        return [float(x) for x in self.reward([r["prompt"] for r in rows], texts, rows)]

    def point(self, policy) -> dict:
        """Reward and KL(π ‖ π_sft) (nats per sequence) of temperature-1 samples, with standard errors."""
        s = self.settings
        ps = policy_samples(policy, self.sft, self.prompt_ids, n=s.samples, max_new_tokens=s.max_new_tokens,
                            eos_id=self.tokenizer.eos_token_id, pad_id=self._pad_id(), seed=self.seed + POINT_SEED,
                            batch_size=s.batch_size)
        reward, kl = Mean.of(self.scores(ps.responses, s.samples)), ps.kl()
        length = Mean.of([float(len(r)) for r in ps.responses])
        return {"reward": reward.mean, "reward_se": reward.se, "kl": kl.mean, "kl_se": kl.se, "length": length.mean}

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def _rewards_at(self, model, temperature: float, index: int) -> list[float]:
        s = self.settings
        responses = sample(model, self.prompt_ids, n=s.samples, max_new_tokens=s.max_new_tokens,
                           temperature=temperature, eos_id=self.tokenizer.eos_token_id, pad_id=self._pad_id(),
                           seed=self.seed + WIN_SEED + index, batch_size=s.batch_size)
        return self.scores(responses, s.samples)

    def sft_rewards(self, temperature: float, index: int) -> list[float]:
        """The SFT model's rewards at `temperature` (computed once)."""
        if temperature not in self._sft_rewards:
            self._sft_rewards[temperature] = self._rewards_at(self.sft, temperature, index)
        return self._sft_rewards[temperature]

    def win_rates(self, policy) -> dict[str, float]:
        """For each temperature: how often the policy's sample beats the SFT model's sample for the same prompt
        and draw (ties count half)."""
        out = {}
        for i, t in enumerate(self.settings.temperatures):
            mine, base = self._rewards_at(policy, t, i), self.sft_rewards(t, i)
            wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, base))
            out[f"{t:g}"] = wins / len(mine)
        return out


def load_checkpoint_policy(start_dir: str | Path, checkpoint: str | Path):
    """The policy saved in a training checkpoint (`checkpoints/step-N`): the starting model's architecture with the
    checkpoint's weights (PPO checkpoints hold actor and critic: the actor is taken)."""
    from safetensors.torch import load_file  # loaded with the weights, like transformers

    path = Path(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise FlanmixError("checkpoint has no model.safetensors", file=checkpoint)
    state = load_file(str(path))
    if any(k.startswith("actor.") for k in state):
        state = {k[len("actor."):]: v for k, v in state.items() if k.startswith("actor.")}
    model = load_policy(start_dir)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise FlanmixError(f"checkpoint weights do not fit the model ({len(missing)} missing, {len(unexpected)} "
                           "unexpected)", file=checkpoint)
    model.tie_weights()
    return model.eval()
