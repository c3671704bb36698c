"""The torch side of evaluation: load a model, greedy generation with a KV cache, option log-likelihoods (rank
classification), and `ModelScorer`, which puts them behind the `Scorer` interface.

Nothing here knows about tasks: it takes prompts (strings) and returns generations or scores; `suites` builds the
prompts and `metrics` judges the outputs.

Tokenization matches SFT training (`trainers.data.tokenize_segments`): the prompt is tokenized on its own (BOS
prepended when the tokenizer adds one), the completion is tokenized on its own and its ids appended, then EOS.
No text is inserted here: callers pass completions as trained (`suites` prefixes a Flan row's options with
`flanmix.core.constants.TARGET_DELIMITER`, as SFT does with its targets). So at inference the model continues the
prompt's ids, and an option is scored as exactly the id sequence the model was trained to produce after that prompt,
EOS included (`include_eos=True`; that also stops an option that is a prefix of another, "4" vs "46", from winning
by being short).

Batching: generation left-pads (so every row's next token sits in the last column) and runs an incremental
KV-cache loop with explicit position ids, so a padded row gets the same positions as when run alone. Scoring
right-pads (a causal model's real positions never see the padding) and sorts by length so batches are dense.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flanmix.core.errors import FlanmixError
from trainers.data import adds_bos, tokenize_segments
from trainers.logprobs import gather_logprobs
from trainers.models import load_model_and_tokenizer

# ------------------------------------------------------------------------------------------------------- loading

def load_model(path: str | Path, *, device: str | None = None, dtype: str = "float32"):
    """Load a local causal LM folder and its tokenizer for evaluation (eval mode).

    Uses `trainers.models.load_model_and_tokenizer`, so a missing or broken folder is a one-line FlanmixError.
    """
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise FlanmixError(f"unknown dtype {dtype!r}", field="dtype", expected="float32 | bfloat16 | float16")
    model, tokenizer = load_model_and_tokenizer(path, dtype=torch_dtype)
    if device:
        model = model.to(device)
    model.eval()
    return model, tokenizer


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _max_positions(model) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "max_position_embeddings", None)


def prompt_ids(tokenizer, prompt: str, *, bos: bool | None = None) -> list[int]:
    """The ids of a prompt exactly as training sees the prompt part of an example (BOS if the tokenizer adds one)."""
    ids, _ = tokenize_segments(tokenizer, [(prompt, False)], bos=bos)
    return ids


# ---------------------------------------------------------------------------------------------------- generation

@dataclass
class GenerationStats:
    """Counters of one `generate_greedy` call (for logging / benchmarks)."""

    prompts: int = 0
    batches: int = 0
    new_tokens: int = 0
    truncated_prompts: int = 0
    seconds: float = 0.0


def _left_truncate(ids: list[int], limit: int, keep_first: bool) -> list[int]:
    if len(ids) <= limit:
        return ids
    if keep_first and limit > 1:
        return ids[:1] + ids[len(ids) - (limit - 1):]
    return ids[len(ids) - limit:]


@torch.inference_mode()
def generate_greedy(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32,
                    stop: Sequence[str] | Sequence[Sequence[str]] | None = None, batch_size: int = 32,
                    stats: GenerationStats | None = None) -> list[str]:
    """Greedy continuations of `prompts` (returned in input order, special tokens removed).

    A row stops at EOS, after `max_new_tokens`, or once its decoded text contains one of its `stop` strings (the
    text is then cut before the stop string). `stop` is one list for all prompts or one list per prompt.
    Prompts are sorted by length and left-padded in batches; the result equals running each prompt alone.
    """
    n = len(prompts)
    if not stop or isinstance(stop[0], str):
        stops: list[tuple[str, ...]] = [tuple(stop or ())] * n  # type: ignore[arg-type]
    else:
        if len(stop) != n:
            raise FlanmixError(f"got {len(stop)} stop lists for {n} prompts", field="stop")
        stops = [tuple(s) for s in stop]  # type: ignore[misc]
    t0 = time.perf_counter()
    stats = stats if stats is not None else GenerationStats()
    bos = adds_bos(tokenizer)
    limit = _max_positions(model)
    encoded = []
    for p in prompts:
        ids = prompt_ids(tokenizer, p, bos=bos)
        if limit and len(ids) + max_new_tokens > limit:
            ids = _left_truncate(ids, max(1, limit - max_new_tokens), keep_first=bos)
            stats.truncated_prompts += 1
        encoded.append(ids)
    order = sorted(range(n), key=lambda i: (len(encoded[i]), i))
    out: list[str] = [""] * n
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        texts, n_new = _generate_batch(model, tokenizer, [encoded[i] for i in idx], [stops[i] for i in idx],
                                       max_new_tokens)
        for i, text in zip(idx, texts):
            out[i] = text
        stats.batches += 1
        stats.new_tokens += n_new
    stats.prompts += n
    stats.seconds += time.perf_counter() - t0
    return out


def _cache_kwarg(model) -> str:
    # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); other models may still use it.
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _get_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _generate_batch(model, tokenizer, batch: list[list[int]], stops: list[tuple[str, ...]],
                    max_new_tokens: int) -> tuple[list[str], int]:
    device = _device(model)
    pad, eos = _pad_id(tokenizer), tokenizer.eos_token_id
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for r, ids in enumerate(batch):
        input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[r, width - len(ids):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    # Positions count real tokens only, so a left-padded row sees the positions it would see alone.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    generated: list[list[int]] = [[] for _ in batch]
    done = [False] * len(batch)
    texts: list[str | None] = [None] * len(batch)
    cache_kw = _cache_kwarg(model)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    past = _get_cache(out)
    last_pos = positions[:, -1:]
    n_new = 0
    for step in range(max_new_tokens):
        next_ids = out.logits[:, -1, :].argmax(-1)
        for r, tid in enumerate(next_ids.tolist()):
            if done[r]:
                continue
            if eos is not None and tid == eos:
                done[r] = True
                continue
            generated[r].append(tid)
            n_new += 1
            if stops[r]:
                text, hit = _cut_at_stop(tokenizer.decode(generated[r], skip_special_tokens=True), stops[r])
                if hit:
                    texts[r], done[r] = text, True
        if all(done) or step == max_new_tokens - 1:
            break
        feed = torch.where(torch.tensor(done, device=device), torch.full_like(next_ids, pad), next_ids)
        attention = torch.cat([attention, torch.ones((len(batch), 1), dtype=attention.dtype, device=device)], 1)
        last_pos = last_pos + 1
        out = model(input_ids=feed[:, None], attention_mask=attention, position_ids=last_pos,
                    use_cache=True, **{cache_kw: past})
        past = _get_cache(out)
    result = []
    for r in range(len(batch)):
        if texts[r] is None:
            texts[r] = _cut_at_stop(tokenizer.decode(generated[r], skip_special_tokens=True), stops[r])[0]
        result.append(texts[r])
    return result, n_new  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------ scoring

@dataclass
class ScoringStats:
    """Counters of one `option_logprobs` call."""

    prompts: int = 0
    sequences: int = 0
    batches: int = 0
    tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class OptionScore:
    """log p(option | prompt) summed over the option's tokens (EOS included if asked), and how many tokens."""

    logprob: float
    tokens: int

    @property
    def mean(self) -> float:
        """Length-normalised score: the mean per-token log-prob."""
        return self.logprob / max(1, self.tokens)


def encode_option(tokenizer, prompt: str, option: str, *, bos: bool | None = None,
                  include_eos: bool = True) -> tuple[list[int], int]:
    """ids of prompt + option as training builds them, and the number of prompt ids (the option is the rest)."""
    ids, labels = tokenize_segments(tokenizer, [(prompt, False), (option, True)], bos=bos,
                                    eos_after_trained=include_eos)
    n_prompt = next((i for i, lab in enumerate(labels) if lab != -100), len(ids))
    return ids, n_prompt


@torch.inference_mode()
def option_logprobs(model, tokenizer, prompts: Sequence[str], options_per_prompt: Sequence[Sequence[str]], *,
                    batch_size: int = 64, max_batch_tokens: int = 65536, include_eos: bool = True,
                    stats: ScoringStats | None = None) -> list[list[OptionScore]]:
    """Score every option of every prompt by its log-likelihood as a continuation of the prompt.

    Returns, per prompt, one `OptionScore` per option (sum of token log-probs and token count). The prompt is
    run once and shared by its options: a batch of prompts is left-padded and encoded with the KV cache, the cache
    is repeated once per option, and the (right-padded) options are run on top of it; only the logits of option
    positions are computed. A batch holds at most `batch_size` (prompt, option) sequences and
    `max_batch_tokens` cached+option positions. A prompt longer than the model's context loses its oldest tokens
    (BOS kept).
    """
    if len(prompts) != len(options_per_prompt):
        raise FlanmixError(f"{len(prompts)} prompts but {len(options_per_prompt)} option lists", field="options")
    t0 = time.perf_counter()
    stats = stats if stats is not None else ScoringStats()
    bos = adds_bos(tokenizer)
    limit = _max_positions(model)
    encoded: list[tuple[list[int], list[list[int]]]] = []  # (prompt ids, [option ids (+EOS)])
    for p, (prompt, options) in enumerate(zip(prompts, options_per_prompt)):
        if not options:
            raise FlanmixError(f"prompt {p} has no options to rank", field="options")
        p_ids: list[int] | None = None
        opts = []
        for option in options:
            ids, n_prompt = encode_option(tokenizer, prompt, option, bos=bos, include_eos=include_eos)
            if n_prompt >= len(ids):
                raise FlanmixError(f"option {option!r} of prompt {p} tokenizes to nothing", field="options")
            p_ids = p_ids if p_ids is not None else ids[:n_prompt]
            opts.append(ids[n_prompt:])
        longest = max(len(o) for o in opts)
        if limit and len(p_ids) + longest > limit:
            if longest >= limit:
                raise FlanmixError(f"an option of prompt {p} alone is longer than the model's context "
                                   f"({limit} tokens)", field="options")
            p_ids = _left_truncate(p_ids, limit - longest, keep_first=bos)
            stats.truncated += 1
        encoded.append((p_ids, opts))
    results: list[list[OptionScore]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i][0]), i))
    batch: list[int] = []
    n_seq = width = 0
    for i in order + [-1]:
        if i < 0 and not batch:
            break
        if i >= 0:
            p_ids, opts = encoded[i]
            new_width = max(width, len(p_ids) + max(len(o) for o in opts))
            if not batch or (n_seq + len(opts) <= batch_size
                             and (n_seq + len(opts)) * new_width <= max_batch_tokens):
                batch.append(i)
                n_seq, width = n_seq + len(opts), new_width
                continue
        for i_b, scores in zip(batch, _score_batch(model, tokenizer, [encoded[j] for j in batch], stats)):
            results[i_b] = scores
        if i >= 0:
            p_ids, opts = encoded[i]
            batch, n_seq, width = [i], len(opts), len(p_ids) + max(len(o) for o in opts)
    stats.prompts += len(prompts)
    stats.seconds += time.perf_counter() - t0
    return results


def _score_batch(model, tokenizer, batch: list[tuple[list[int], list[list[int]]]],
                 stats: ScoringStats) -> list[list[OptionScore]]:
    device = _device(model)
    pad = _pad_id(tokenizer)
    # 1) the prompts, left-padded, once each: cache + the logits that predict each option's first token.
    width = max(len(p) for p, _ in batch)
    p_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    p_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (ids, _) in enumerate(batch):
        p_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        p_mask[r, width - len(ids):] = 1
    p_ids, p_mask = p_ids.to(device), p_mask.to(device)
    positions = (p_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # [B, V]
    cache = _get_cache(out)
    # 2) one row per (prompt, option): repeat the prompt's cache, run the right-padded option tokens on it.
    rows = [(b, k) for b, (_, opts) in enumerate(batch) for k in range(len(opts))]
    index = torch.tensor([b for b, _ in rows], dtype=torch.long, device=device)
    opt_len = max(len(batch[b][1][k]) for b, k in rows)
    o_ids = torch.full((len(rows), opt_len), pad, dtype=torch.long)
    o_mask = torch.zeros((len(rows), opt_len), dtype=torch.long)
    for r, (b, k) in enumerate(rows):
        ids = batch[b][1][k]
        o_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        o_mask[r, :len(ids)] = 1
    o_ids, o_mask = o_ids.to(device), o_mask.to(device)
    totals = first[index].gather(-1, o_ids[:, :1]).squeeze(-1).double()  # the first option token
    if opt_len > 1:
        cache.reorder_cache(index)  # index_select along the batch axis: repeats each prompt's cache
        mask = torch.cat([p_mask[index], o_mask], dim=1)
        o_pos = positions[index, -1:] + 1 + torch.arange(opt_len, device=device)[None, :]
        # Only tokens 0..L-2 are inputs whose next-token logits we need; the last option token predicts nothing.
        logits = model(input_ids=o_ids[:, :-1], attention_mask=mask[:, :-1], position_ids=o_pos[:, :-1],
                       use_cache=True, **{_cache_kwarg(model): cache}).logits
        rest = gather_logprobs(logits, o_ids[:, 1:]) * o_mask[:, 1:]
        totals = totals + rest.double().sum(-1)
    counts = o_mask.sum(-1).tolist()
    scores: list[list[OptionScore]] = [[] for _ in batch]
    for r, (b, _) in enumerate(rows):
        scores[b].append(OptionScore(float(totals[r]), int(counts[r])))
    stats.batches += 1
    stats.sequences += len(rows)
    stats.tokens += int(p_mask.sum()) + int(o_mask.sum())
    return scores


# ------------------------------------------------------------------------------------------------------ the Scorer

class ModelScorer:
    """A causal LM (a model folder, or a model and its tokenizer in memory) behind the `Scorer` interface."""

    def __init__(self, model, tokenizer=None, *, batch_size: int = 32, include_eos: bool = True,
                 threads: int | None = None, device: str | None = None) -> None:
        if tokenizer is None:
            model, tokenizer = load_model(model, device=device)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.include_eos = batch_size, include_eos
        self.params = sum(p.numel() for p in model.parameters())
        # Tiny models are dominated by per-op overhead; a second intra-op thread only adds contention (measured
        # 2-10x slower with 2 threads on a shared 2-core machine), so they run single-threaded unless told.
        self.threads = threads if threads is not None else (1 if self.params < 20_000_000 else None)
        self.gen_stats = GenerationStats()
        self.rank_stats = ScoringStats()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Eval mode and the thread count for one call; both go back as they were (a model handed over
        mid-training keeps training afterwards)."""
        old_threads, training = torch.get_num_threads(), self.model.training
        self.model.eval()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(old_threads)
            self.model.train(training)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[Sequence[str]]) -> list[str]:
        """Greedy continuations (see `generate_greedy`)."""
        with self._running():
            return generate_greedy(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                                   stop=[tuple(s) for s in stop], batch_size=self.batch_size, stats=self.gen_stats)

    def rank(self, prompts: Sequence[str], options: Sequence[Sequence[str]]) -> list[list[tuple[float, int]]]:
        """(sum of log-probs, token count) of every option of every prompt (see `option_logprobs`)."""
        with self._running():
            scores = option_logprobs(self.model, self.tokenizer, prompts, options, batch_size=self.batch_size * 2,
                                     include_eos=self.include_eos, stats=self.rank_stats)
        return [[(s.logprob, s.tokens) for s in row] for row in scores]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone (sets generation budgets)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def timing(self) -> dict:
        """Throughput counters of the calls so far (the results' `timing` section)."""
        g, r = self.gen_stats, self.rank_stats
        return {"generation": {"prompts": g.prompts, "seconds": round(g.seconds, 3), "new_tokens": g.new_tokens,
                               "prompts_per_s": round(g.prompts / g.seconds, 1) if g.seconds else None,
                               "truncated_prompts": g.truncated_prompts},
                "rank_classification": {"prompts": r.prompts, "sequences": r.sequences, "seconds": round(r.seconds, 3),
                                        "prompts_per_s": round(r.prompts / r.seconds, 1) if r.seconds else None,
                                        "truncated": r.truncated},
                "threads": self.threads, "params": self.params}
