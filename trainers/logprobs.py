"""Log-probability helpers shared by the DPO, RRHF and PPO stages.

Convention used everywhere in this module: a batch is right-padded `input_ids [N, T]` with `attention_mask` and a
`loss_mask` that is 1 on completion tokens (EOS included) and 0 on prompt and padding. The log-prob of token `t`
is read from the logits at position `t - 1`, so every per-token tensor returned here has length `T - 1` and is
aligned with `loss_mask[:, 1:]`.

Decoder-only models with a linear output head never build the [N, T, V] logits of a batch: the head runs only at
the positions that predict a completion token (`head_logprobs`), and when gradients are needed and those logits
would still be large (a big vocabulary), in chunks under activation checkpointing, so one chunk's logits exist at a
time in the forward and, recomputed, in the backward. The numbers are those of the model's own forward
(tests/train/test_logprobs.py).

An encoder-decoder model (T5) reads the same batches: `sequence_logprobs` hands them to
`trainers.seq2seq.completion_logprobs`, which gives the prompt to the encoder and scores the completion with the
decoder, so DPO and RRHF work on the decoder's sequence log-probs without a layout of their own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from trainers import seq2seq
from trainers.adapters import as_forward, backbone, plain_model
from trainers.models import is_encoder_decoder


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[tokens] without materialising the full log-softmax tensor twice."""
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


# Most [rows, V] logits elements built at once when log-probs need gradients (16 MiB in fp32): above it the head
# runs chunk by chunk under checkpointing. Below it, one plain pass: nothing worth saving, no recomputation.
LOGITS_BUDGET = 2**22


def output_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """The logits a decoder-only model's forward computes from its last hidden states: the output head, then the
    post-processing some architectures add (Gemma 2/3's final soft-capping, Cohere's logit scale, Granite's logit
    scaling)."""
    cfg = plain_model(model).config
    logits = model.get_output_embeddings()(hidden)
    if getattr(cfg, "logit_scale", None):
        logits = logits * cfg.logit_scale
    if getattr(cfg, "logits_scaling", None):
        logits = logits / cfg.logits_scaling
    if getattr(cfg, "final_logit_softcapping", None):
        cap = cfg.final_logit_softcapping
        logits = torch.tanh(logits / cap) * cap
    return logits


def has_linear_head(model) -> bool:
    """True for a transformers decoder-only model whose output head is a plain linear layer (the condition for
    projecting only selected positions); False for anything else, e.g. a distributed wrapper."""
    get = getattr(model, "get_output_embeddings", None)
    return callable(get) and isinstance(get(), torch.nn.Linear)


def head_logprobs(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] for the hidden states `hidden` [M, H] (float32, [M]). With gradients and more
    than `LOGITS_BUDGET` logits, the rows go through the head in chunks, each under non-reentrant checkpointing:
    the backward recomputes a chunk's logits instead of keeping all [M, V] of them plus their log-softmax."""
    head = model.get_output_embeddings()
    # out_features, not weight.shape[0]: a 4-bit (QLoRA) layer stores its weight packed
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    rows = max(1, LOGITS_BUDGET // max(vocab, 1))
    if hidden.shape[0] <= rows:
        return gather_logprobs(output_logits(model, hidden), targets)

    def chunk(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gather_logprobs(output_logits(model, h), t)

    grad = torch.is_grad_enabled()
    parts = []
    for s in range(0, hidden.shape[0], rows):
        h, t = hidden[s: s + rows], targets[s: s + rows]
        # no randomness in the head, so no RNG state to save for the recomputation
        parts.append(checkpoint(chunk, h, t, use_reentrant=False, preserve_rng_state=False) if grad else chunk(h, t))
    return torch.cat(parts)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log π(x_t | x_<t) for t = 1..T-1: shape [N, T-1]."""
    return gather_logprobs(logits[:, :-1], input_ids[:, 1:])


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position (same leading shape as logits[..., 0])."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean over the entries where mask is 1 (over everything when dim is None)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise to zero mean / unit variance over the masked entries (variance unbiased, as in most PPO code)."""
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if n > 1:
        var = var * n / (n - 1)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits of a causal LM for a right-padded batch."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def completion_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token completion log-probs [N, T-1] (zero outside the completion) and the matching mask [N, T-1]; the
    output head runs only at the completion positions (`head_logprobs`) when it is a plain linear layer."""
    if has_linear_head(model):
        hidden = backbone(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        sel = loss_mask[:, 1:].bool()
        lp = head_logprobs(model, hidden[:, :-1][sel], input_ids[:, 1:][sel])
        logps = torch.zeros(sel.shape, dtype=lp.dtype, device=lp.device).index_put(sel.nonzero(as_tuple=True), lp)
        return logps, sel.to(lp.dtype)
    logits = forward_logits(model, input_ids, attention_mask)
    mask = loss_mask[:, 1:].to(logits.dtype if logits.is_floating_point() else torch.float32)
    logps = token_logprobs(logits, input_ids) * mask
    return logps, mask


def sequence_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """log π(completion | prompt) per sequence: the sum over completion tokens, or the per-token mean (an
    encoder-decoder: the decoder's log-probs of the completion given the prompt in the encoder)."""
    if is_encoder_decoder(model):
        logps, mask = seq2seq.completion_logprobs(model, input_ids, attention_mask, loss_mask)
    else:
        logps, mask = completion_logprobs(model, input_ids, attention_mask, loss_mask)
    total = logps.sum(-1)
    if average:
        return total / mask.sum(-1).clamp(min=1.0)
    return total


@torch.no_grad()
def precompute_sequence_logprobs(model, batches, average: bool = False) -> torch.Tensor:
    """Sequence log-probs of a frozen model over an iterable of collated batches, concatenated in batch order."""
    was_training = model.training
    model.eval()
    out = []
    for batch in batches:
        out.append(sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"],
                                     average=average).detach().float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------------------- prefix-shared batches

def shared_hidden(model, batch: dict) -> torch.Tensor:
    """Last hidden states [G, L, H] of a prefix-shared batch (see trainers.preference.collate_shared)."""
    mask = batch["attention_mask"]
    impl = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if mask.is_floating_point():
        # sdpa (and flex/flash paths) take a boolean "may attend" mask, which is dtype-agnostic under autocast;
        # eager adds the mask to the scores, so it gets the additive form in the compute dtype
        if impl != "eager":
            mask = mask == 0
        else:
            dtype = torch.get_autocast_dtype(mask.device.type) if torch.is_autocast_enabled(mask.device.type) \
                else next(model.parameters()).dtype
            mask = mask.to(dtype).clamp(min=torch.finfo(dtype).min)
    return backbone(model)(input_ids=batch["input_ids"], attention_mask=mask,
                           position_ids=batch["position_ids"], use_cache=False).last_hidden_state


def shared_sequence_logprobs(model, batch: dict, average: bool = False) -> torch.Tensor:
    """log π(completion | prompt) per sequence of a prefix-shared batch. The vocabulary projection runs only at
    the positions that predict a completion token (the output head must be a plain linear layer)."""
    hidden = shared_hidden(model, batch)
    h = hidden[batch["tok_row"], batch["tok_src"]]
    lp = head_logprobs(model, h, batch["input_ids"][batch["tok_row"], batch["tok_tgt"]])
    n = batch["group"].shape[0]
    total = torch.zeros(n, dtype=lp.dtype, device=lp.device).index_add(0, batch["tok_seq"], lp)
    if average:
        counts = torch.zeros(n, dtype=lp.dtype, device=lp.device).index_add(0, batch["tok_seq"], torch.ones_like(lp))
        return total / counts.clamp(min=1.0)
    return total


def batch_sequence_logprobs(model, batch: dict, average: bool = False) -> torch.Tensor:
    """Sequence log-probs of a padded (`collate`) or prefix-shared (`collate_shared`) preference batch; a model
    in a DDP / DeepSpeed wrapper computes them as the wrapper's forward (`trainers.adapters.as_forward`)."""
    return as_forward(model, _batch_sequence_logprobs, batch, average)


def _batch_sequence_logprobs(model, batch: dict, average: bool) -> torch.Tensor:
    if "tok_row" in batch:
        return shared_sequence_logprobs(model, batch, average)
    return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["loss_mask"], average)
