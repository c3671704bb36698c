"""Sampling from a causal LM, sequence log-probabilities, and the Monte-Carlo sequence KL between two models.

A response is what sampling makes after the prompt: tokens up to and including the first EOS, or `max_new_tokens`
tokens without one. That defines a distribution π(y | x) over responses, and

    KL(π ‖ π_sft)(x) = E_{y ~ π(·|x)} [ log π(y|x) − log π_sft(y|x) ],   log π(y|x) = Σ_t log π(y_t | x, y_<t)

is estimated by the mean of log π(y|x) − log π_sft(y|x) over samples y of the policy at temperature 1 (and over
the held-out prompts x): unbiased, and exact in expectation because both log-probabilities are computed on the
same (possibly truncated) responses that sampling produces. `tests/study/test_frontier.py` checks it against the
exact sum over every response of a tiny vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mean:
    """A sample mean with its standard error."""

    mean: float
    se: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Mean:
        n = len(values)
        if n == 0:
            return cls(float("nan"), float("nan"))
        m = sum(values) / n
        var = sum((v - m) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(m, math.sqrt(var / n))


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def _sample_batch(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float, eos_id: int,
                  pad_id: int, generator: torch.Generator) -> list[list[int]]:
    ids, mask = _left_pad(prompts, pad_id)
    pos = _positions(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    cache, logits = out.cache, out.logits[:, -1]
    last = pos[:, -1]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    responses: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        for i in (~done).nonzero().flatten().tolist():
            responses[i].append(int(tok[i]))
        done |= tok == eos_id
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype)], dim=1)
        last = last + 1
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=mask, position_ids=last.unsqueeze(-1),
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1]
    return responses


def sample(model, prompts: Sequence[Sequence[int]], *, n: int = 1, max_new_tokens: int = 32,
           temperature: float = 1.0, eos_id: int, pad_id: int, seed: int = 0, batch_size: int = 64
           ) -> list[list[int]]:
    """`n` responses per prompt (prompt-major: prompt i's j-th response is at i * n + j), sampled from the full
    softmax at `temperature` with a generator seeded by `seed` (the global RNG is not touched)."""
    was = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    rows = [p for p in prompts for _ in range(n)]
    out: list[list[int]] = []
    try:
        for i in range(0, len(rows), batch_size):
            out += _sample_batch(model, rows[i: i + batch_size], max_new_tokens, temperature, eos_id, pad_id,
                                 generator)
    finally:
        model.train(was)
    return out


@torch.no_grad()
def response_logprobs(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *, pad_id: int,
                      batch_size: int = 64) -> list[float]:
    """log π(y | x) of each (prompt, response): the sum of the response's token log-probabilities (EOS included
    when the response has it), from one forward over the left-padded prompt followed by the response."""
    was = model.training
    model.eval()
    out: list[float] = []
    try:
        for i in range(0, len(prompts), batch_size):
            ps, rs = prompts[i: i + batch_size], responses[i: i + batch_size]
            p_ids, p_mask = _left_pad(ps, pad_id)
            width = max(1, max(len(r) for r in rs))
            r_ids = torch.full((len(rs), width), pad_id, dtype=torch.long)
            r_mask = torch.zeros((len(rs), width), dtype=torch.long)
            for j, r in enumerate(rs):
                r_ids[j, : len(r)] = torch.tensor(list(r), dtype=torch.long)
                r_mask[j, : len(r)] = 1
            ids, mask = torch.cat([p_ids, r_ids], 1), torch.cat([p_mask, r_mask], 1)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=False).logits
            start = p_ids.shape[1] - 1  # logits at start + t predict response token t
            lp = torch.log_softmax(logits[:, start: start + width].float(), dim=-1)
            picked = lp.gather(-1, r_ids.unsqueeze(-1)).squeeze(-1) * r_mask
            out += picked.sum(-1).tolist()
    finally:
        model.train(was)
    return out


@dataclass(frozen=True)
class PolicySamples:
    """Samples of a policy on prompts: the responses, and log π(y|x) and log π_ref(y|x) of each."""

    prompt_index: list[int]
    responses: list[list[int]]
    logp: list[float]
    ref_logp: list[float]

    def kl(self) -> Mean:
        """The Monte-Carlo sequence KL(π ‖ π_ref): mean over samples of log π(y|x) − log π_ref(y|x)."""
        return Mean.of([a - b for a, b in zip(self.logp, self.ref_logp)])


def policy_samples(policy, ref, prompts: Sequence[Sequence[int]], *, n: int, max_new_tokens: int, eos_id: int,
                   pad_id: int, seed: int, batch_size: int = 64) -> PolicySamples:
    """`n` samples per prompt from `policy` at temperature 1, with their log-probabilities under both models."""
    responses = sample(policy, prompts, n=n, max_new_tokens=max_new_tokens, temperature=1.0, eos_id=eos_id,
                       pad_id=pad_id, seed=seed, batch_size=batch_size)
    rows = [p for p in prompts for _ in range(n)]
    logp = response_logprobs(policy, rows, responses, pad_id=pad_id, batch_size=batch_size)
    ref_logp = logp if ref is policy else response_logprobs(ref, rows, responses, pad_id=pad_id,
                                                            batch_size=batch_size)
    return PolicySamples([i for i in range(len(prompts)) for _ in range(n)], responses, logp, ref_logp)

